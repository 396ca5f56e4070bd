#!/usr/bin/env bash
# Downloads every wheel the Docker build needs (the build stage's .[train,serve] and the runtime's
# .[serve], plus the build backend) into a wheelhouse folder of the build context, for an offline
# build: `--build-arg OFFLINE=1` installs with `pip install --no-index --find-links`.
# Wheels are for the image's Python (CPython 3.11, manylinux x86_64), whatever the host runs.
# Reuses the wheelhouse when its stamp matches the current requirements.
# Usage: wheelhouse.sh [DIR]   (DIR defaults to .wheelhouse; run from the repository root)
set -euo pipefail

dest="${1:-.wheelhouse}"
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"

requirements="$("$python" "$here/requirements.py" train,serve)"
# The build backend of pyproject.toml, needed to build the project's own wheel offline.
requirements+=$'\n'"setuptools>=68"$'\n'"wheel"
stamp_value="$(printf '%s\n' "$requirements" | sha256sum | cut -d' ' -f1)"
stamp="$dest/.requirements.sha256"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$stamp_value" ]] && compgen -G "$dest/torch-*.whl" >/dev/null; then
    echo "wheelhouse $dest matches the requirements: reused ($(find "$dest" -name '*.whl' | wc -l) wheels)"
    exit 0
fi

mkdir -p "$dest"
rm -f "$stamp"
printf '%s\n' "$requirements" >"$dest/requirements.txt"
# Every manylinux tag the image's glibc (bookworm: 2.36) accepts; pip does not always expand one.
platforms=(--platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
for minor in 5 12 $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
"$python" -m pip download --quiet --dest "$dest" \
    --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 "${platforms[@]}" \
    -r "$dest/requirements.txt"
if compgen -G "$dest/torch-*+cu*.whl" >/dev/null || compgen -G "$dest/nvidia_*.whl" >/dev/null; then
    echo "the wheelhouse holds CUDA builds of torch or nvidia-* packages; expected the CPU build" >&2
    exit 1
fi
printf '%s\n' "$stamp_value" >"$stamp"
echo "wheelhouse $dest: $(find "$dest" -name '*.whl' | wc -l) wheels, $(du -sh "$dest" | cut -f1)"
