#!/bin/sh
# pip inside the Docker build: from the wheelhouse when one was given (offline: --no-index),
# from the package index otherwise.   pip.sh [--torch] PYTHON SUBCOMMAND [ARGS...]
# --torch: torch's own index (TORCH_INDEX_URL, the CPU build by default) first, so that a normal
# build never pulls the CUDA build of torch and its nvidia-* packages.
set -eu
torch=0
if [ "${1:-}" = "--torch" ]; then torch=1; shift; fi
python="$1"; subcommand="$2"; shift 2

if ls /wheelhouse/*.whl >/dev/null 2>&1; then
    echo "pip $subcommand: offline, from the wheelhouse ($WHEELHOUSE)"
    exec "$python" -m pip "$subcommand" --no-index --find-links /wheelhouse "$@"
fi
if [ "$WHEELHOUSE" != "scripts/container/empty" ]; then
    echo "WHEELHOUSE=$WHEELHOUSE holds no *.whl file: run scripts/container/wheelhouse.sh $WHEELHOUSE first" >&2
    exit 2
fi
if [ "$torch" = 1 ]; then
    echo "pip $subcommand: torch from $TORCH_INDEX_URL"
    exec "$python" -m pip "$subcommand" --index-url "$TORCH_INDEX_URL" --extra-index-url "$PIP_INDEX_URL" "$@"
fi
echo "pip $subcommand: from $PIP_INDEX_URL"
exec "$python" -m pip "$subcommand" --index-url "$PIP_INDEX_URL" "$@"
