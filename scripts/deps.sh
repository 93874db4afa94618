#!/bin/sh
# Installs the Debian 12 packages softpick-vk needs, only those missing. Non-interactive: safe in
# CI (root, no terminal). Usage: scripts/deps.sh [fuzz|compare]   (fuzz: also clang and libFuzzer;
# compare: also Fashion-MNIST and matplotlib, for examples/python/compare_normalizers.py)
set -eu
packages="cmake make gcc libc6-dev pkg-config glslang-tools libvulkan-dev libvulkan-volk-dev
libcmocka-dev mesa-vulkan-drivers vulkan-validationlayers python3 python3-numpy python3-pytest openmpi-bin
libopenmpi-dev python3-mpi4py"
[ "${1:-}" = fuzz ] && packages="$packages clang libclang-rt-14-dev"
[ "${1:-}" = compare ] && packages="$packages dataset-fashion-mnist python3-matplotlib"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q </dev/null
# shellcheck disable=SC2086
$sudo apt-get install -y -q --no-install-recommends $missing </dev/null
