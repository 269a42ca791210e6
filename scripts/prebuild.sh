#!/usr/bin/env bash
# Builds the native addon and the watchdog for every platform the npm package
# ships prebuilt (the usual prebuild layout: prebuilds/<platform>-<arch>/), so
# that `npm install synhold` needs no compiler, make or python3 on the target.
# Run by `npm pack` (package.json "prepack"); the outputs are not committed.
#
#   linux-x64    cc
#   linux-arm64  the Debian cross compiler (gcc-aarch64-linux-gnu)
# with node-gyp's flags and defines. The addon uses only Node-API, whose headers
# (/usr/include/node) are the same for every architecture, and links nothing
# from Node.js (the napi_* symbols resolve in the node binary that loads it).
# build/Release (a source build, which a checkout's tests run) is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
CFLAGS=(-Wall -Wextra -Werror=implicit-function-declaration -O2)
# The sources as binding.gyp lists them (the one list: a source build and a prebuilt build the same files).
gyp_sources() { node -e 'const t = JSON.parse(require("fs").readFileSync("binding.gyp", "utf8")).targets.find((x) => x.target_name === process.argv[1]); console.log(t.sources.join(" "))' "$1"; }
read -r -a ADDON_SOURCES <<<"$(gyp_sources synhold_native)"
read -r -a WATCHDOG_SOURCES <<<"$(gyp_sources synhold-watchdog)"
NODE_INCLUDE=${NODE_INCLUDE:-$(dirname "$(dirname "$(command -v node)")")/include/node}
[[ -f $NODE_INCLUDE/node_api.h ]] || { echo "prebuild: no node_api.h under $NODE_INCLUDE (set NODE_INCLUDE)" >&2; exit 1; }

rm -rf prebuilds
build() { # ARCH CC
  local out=prebuilds/linux-$1
  mkdir -p "$out"
  command -v "$2" >/dev/null || { echo "prebuild: $2 missing (Debian: see scripts/programs.txt)" >&2; exit 1; }
  "$2" "${CFLAGS[@]}" -fPIC -shared -DBUILDING_NODE_EXTENSION -DNODE_GYP_MODULE_NAME=synhold_native -I"$NODE_INCLUDE" "${ADDON_SOURCES[@]}" -o "$out/synhold_native.node"
  "$2" "${CFLAGS[@]}" "${WATCHDOG_SOURCES[@]}" -o "$out/synhold-watchdog"
}
build x64 cc
build arm64 aarch64-linux-gnu-gcc
echo "prebuild: $(cd prebuilds && find . -type f | sort | tr '\n' ' ')"
