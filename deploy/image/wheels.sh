#!/usr/bin/env bash
# The wheelhouse the Dockerfile installs from (--no-index): the serving closure, setup.cfg's base
# install_requires pinned by constraints.txt, binary wheels for the image's CPython 3.11 on
# manylinux x86_64, downloaded on the host so the build itself needs no network.
#   deploy/image/wheels.sh [PYTHON] [DIR]      (default: .venv/bin/python, wheels/)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${1:-.venv/bin/python}
DIR=${2:-wheels}
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
"$PYTHON" -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); print(c['options']['install_requires'].strip())" >"$requirements"
mkdir -p "$DIR"
"$PYTHON" -m pip download -q --disable-pip-version-check --dest "$DIR" \
    --only-binary=:all: --implementation cp --python-version 3.11 \
    --abi cp311 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -c constraints.txt -r "$requirements"
echo "wheels: $(ls "$DIR"/*.whl | wc -l) wheels in $DIR/ ($(du -sh "$DIR" | cut -f1))"
