#!/bin/sh
# The normalizers compared on real data (examples/python/compare_normalizers.py): installs what is
# missing (Fashion-MNIST and matplotlib too), builds the release preset, trains the same model with
# each normalizer and writes the plot. Arguments go to the example (--steps N, --plot PATH).
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh compare
cmake --preset release >/dev/null
cmake --build --preset release >/dev/null
python=/usr/bin/python3
[ -x "$python" ] || python=python3
PYTHONPATH=python SOFTPICK_LIBRARY="$PWD/build/release/libsoftpick.so" "$python" examples/python/compare_normalizers.py "$@"
