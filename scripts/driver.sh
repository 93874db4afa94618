#!/bin/sh
# Runs a command on a Vulkan driver other than the system's, fetched on first use into
# build/drivers/ from Debian packages and extracted there (nothing is installed over the system's
# drivers):
#   scripts/driver.sh swiftshader CMD [ARGS...]  Google's SwiftShader, from chromium-common
#   scripts/driver.sh mesa25 CMD [ARGS...]       Mesa 25's lavapipe, from this release's backports
#                                                suite (the entry derived from the machine's apt sources)
#   scripts/driver.sh lavapipe CMD [ARGS...]     the system's lavapipe (mesa-vulkan-drivers)
# Example: scripts/driver.sh swiftshader build/release/tools/softpick selftest
set -eu
[ $# -ge 2 ] || { echo "usage: scripts/driver.sh swiftshader|mesa25|lavapipe CMD [ARGS...]" >&2; exit 2; }
name=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/build/drivers/$name"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

# The first Debian archive URI among the machine's apt sources that serves this release.
debian_uri() {
  codename=$1
  {
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v c="$codename" '
      /^URIs:/ { uris = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == c) hit = 1 }
      /^$/ { if (hit && uris) print uris; hit = 0; uris = "" } END { if (hit && uris) print uris }'
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      sed -n "s/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) $codename .*/\2/p"
  } | head -n 1
}

# Downloads packages (name/suite) into $dir/debs and extracts each into $dir/root.
fetch() {
  mkdir -p "$dir/debs" "$dir/root"
  (cd "$dir/debs" && apt-get -q $apt_opts -o APT::Sandbox::User=root download "$@" </dev/null)
  for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
  rm -rf "$dir/debs"
}

apt_opts=""
case $name in
lavapipe)
  icd=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
  [ -f "$icd" ] || icd=$(ls /usr/share/vulkan/icd.d/lvp_icd*.json | head -n 1)
  libs=""
  ;;
swiftshader)
  icd="$dir/root/usr/lib/chromium/vk_swiftshader_icd.json"
  if [ ! -f "$icd" ]; then
    ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || $sudo apt-get update -q </dev/null # once, on a new machine
    fetch chromium-common
  fi
  libs=""
  ;;
mesa25)
  icd="$dir/lvp_icd.json"
  if [ ! -f "$icd" ]; then
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    uri=$(debian_uri "$codename")
    [ -n "$uri" ] || { echo "driver.sh: no Debian archive for $codename among the apt sources" >&2; exit 1; }
    # A private sources list and package lists: the system's apt configuration is left alone.
    mkdir -p "$dir/apt/lists/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $codename-backports main" \
      >"$dir/apt/sources.list"
    apt_opts="-o Dir::Etc::sourcelist=$dir/apt/sources.list -o Dir::Etc::sourceparts=- \
      -o Dir::State::Lists=$dir/apt/lists -o APT::Get::List-Cleanup=0"
    apt-get -q $apt_opts update </dev/null >/dev/null
    # lavapipe 25 and the libdrm it was built against (its other libraries are the release's).
    fetch "mesa-vulkan-drivers/$codename-backports" "libdrm2/$codename-backports" "libdrm-amdgpu1/$codename-backports"
    lib=$(dirname "$(find "$dir/root" -name libvulkan_lvp.so | head -n 1)")
    sed "s|\"library_path\": *\"[^\"]*\"|\"library_path\": \"$lib/libvulkan_lvp.so\"|" \
      "$(find "$dir/root" -name 'lvp_icd*.json' | head -n 1)" >"$icd"
  fi
  libs=$(dirname "$(find "$dir/root" -name libvulkan_lvp.so | head -n 1)")
  ;;
*)
  echo "driver.sh: unknown driver '$name' (swiftshader, mesa25 or lavapipe)" >&2
  exit 2
  ;;
esac
export VK_ICD_FILENAMES="$icd" VK_DRIVER_FILES="$icd"
[ -n "$libs" ] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$@"
