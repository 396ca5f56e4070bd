#!/bin/sh
# The model repository baked into the image: the one given at build time (MODEL_REPOSITORY) when
# it holds a model, otherwise the default models trained and exported from data/ here.
#   build-models.sh GIVEN_DIR OUT_REPOSITORY CHECKPOINT_DIR
set -eu
given="$1"; repo="$2"; checkpoints="$3"

if find "$given" -mindepth 3 -maxdepth 3 -name manifest.json | grep -q .; then
    echo "model repository: copied from the build context ($MODEL_REPOSITORY)"
    mkdir -p "$repo"
    cp -R "$given"/. "$repo"/
else
    for command in train export; do
        if ! monoserve "$command" --help >/dev/null 2>&1; then
            echo "'monoserve $command' is not available in this source tree: cannot build the default models" >&2
            echo "(give a ready model repository instead: --build-arg MODEL_REPOSITORY=<folder in the context>)" >&2
            exit 1
        fi
    done
    echo "model repository: training and exporting the default models"
    mkdir -p "$checkpoints"
    monoserve train smoother --data data/nile.csv --column value --out "$checkpoints/smoother.ckpt"
    # the best monotone configuration measured (docs/training.md); the same as the Makefile's `models`
    monoserve train classifier --data data/spam7.csv --label spam --activation tanh --transform log1p \
        --calibrate platt --threshold-criterion f1 --out "$checkpoints/classifier.ckpt"
    monoserve export "$checkpoints/smoother.ckpt" --repo "$repo" --name smoother
    monoserve export "$checkpoints/classifier.ckpt" --repo "$repo" --name classifier
fi
# Read-only for everyone but root: the service user can read the models, never change them.
chmod -R a+rX,a-w "$repo"
find "$repo" -maxdepth 3 -name manifest.json
