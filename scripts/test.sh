#!/bin/sh
# The README's second command: install what is missing, build the debug preset, and run the
# whole test suite on the default device (lavapipe on machines without a GPU) with the Khronos
# validation layer on: the C tests (extra arguments go to ctest), then the Python package's
# tests on the same build's library with Debian's python3.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake --preset debug >/dev/null
cmake --build --preset debug
ctest --preset debug "$@"
python=/usr/bin/python3
[ -x "$python" ] || python=python3
SOFTPICK_LIBRARY="$PWD/build/debug/libsoftpick.so" "$python" -m pytest -q -p no:cacheprovider python/tests
