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
ADDON_SOURCES=(native/netlink_socket.c native/file_lock.c native/netns_file.c native/spawn.c native/addon.c)
NODE_INCLUDE=${NODE_INCLUDE:-$(dirname "$(dirname "$(command -v node)")")/include/node}
[[ -f $NODE_INCLUDE/node_api.h ]] || { echo "prebuild: no node_api.h under $NODE_INCLUDE (set NODE_INCLUDE)" >&2; exit 1; }

rm -rf prebuilds
build() { # ARCH CC
  local out=prebuilds/linux-$1
  mkdir -p "$out"
  command -v "$2" >/dev/null || { echo "prebuild: $2 missing (Debian: see scripts/programs.txt)" >&2; exit 1; }
  "$2" "${CFLAGS[@]}" -fPIC -shared -DBUILDING_NODE_EXTENSION -DNODE_GYP_MODULE_NAME=synhold_native -I"$NODE_INCLUDE" "${ADDON_SOURCES[@]}" -o "$out/synhold_native.node"
  "$2" "${CFLAGS[@]}" native/watchdog.c -o "$out/synhold-watchdog"
}
build x64 cc
build arm64 aarch64-linux-gnu-gcc
echo "prebuild: $(cd prebuilds && find . -type f | sort | tr '\n' ' ')"
