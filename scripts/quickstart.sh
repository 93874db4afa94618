#!/bin/sh
# The README's first command: install what is missing, build the release preset, list the Vulkan
# devices, softpick a generated array, run the main job: softpick demo, the default transformer
# on seeded random weights and input, and the Python example.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
bin=build/release/tools/softpick
$bin devices
# A [2, 4] float32 array as NPY (version 1.0, 64-byte header), written without any tools:
# rows (1, -2, 3, -4) and (0.5, 0.5, 0.5, 0.5).
in=build/release/example.npy
out=build/release/example_softpick.npy
{
  printf '\223NUMPY\001\000\166\000'
  printf "%-117s\n" "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }"
  printf '\000\000\200\077\000\000\000\300\000\000\100\100\000\000\200\300'
  printf '\000\000\000\077\000\000\000\077\000\000\000\077\000\000\000\077'
} >"$in"
$bin softpick --axis -1 "$in" "$out"
echo "softpick along the last axis of [[1, -2, 3, -4], [0.5, 0.5, 0.5, 0.5]] -> $out"
echo "expected [[0.0909, -0.1818, 0.2727, -0.3636], [0.1667, 0.1667, 0.1667, 0.1667]]"
od -A n -t f4 -j 128 "$out"
$bin demo
# The same library from Python (python/softpick, ctypes; Debian's python3-numpy):
python=/usr/bin/python3
[ -x "$python" ] || python=python3
PYTHONPATH=python SOFTPICK_LIBRARY="$PWD/build/release/libsoftpick.so" "$python" examples/python/ops.py
