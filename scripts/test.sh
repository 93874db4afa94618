#!/bin/sh
# The README's second command: install what is missing, build the debug preset, and run the
# whole test suite on the default device (lavapipe on machines without a GPU) with the Khronos
# validation layer on. Extra arguments go to ctest.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake --preset debug >/dev/null
cmake --build --preset debug
ctest --preset debug "$@"
