#!/usr/bin/env bash
# Installs everything synhold's demo and tests need, on a fresh Debian machine
# as root. Idempotent: a second run only re-checks.
#
#   Debian packages  apt-get (HAProxy, nginx, ab, iptables, User-Mode Linux, ...)
#   npm packages     npm ci (TypeScript, the HDR histogram library), which also
#                    builds the native netlink addon with node-gyp
#   kernel lab       a User-Mode Linux kernel that boots on this CPU (see below)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(user-mode-linux kmod iproute2 haproxy nginx-light apache2-utils iptables
          libnl-utils strace librsvg2-bin patchelf procps psmisc)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts packaged daemons on install where it can; synhold starts its own, by PID.
for svc in nginx haproxy; do
  if command -v systemctl >/dev/null && systemctl is-active -q "$svc" 2>/dev/null; then systemctl stop "$svc" || true; fi
done

addon=build/Release/synhold_native.node
if [[ ! -d node_modules || ! -f $addon || package-lock.json -nt $addon ]]; then
  npm ci --no-audit --no-fund       # also builds the addon (package.json "install": node-gyp rebuild)
elif [[ -n "$(find native binding.gyp -newer "$addon" 2>/dev/null)" ]]; then
  npm run install                   # the addon's sources changed since it was built
fi
npx tsc -p tsconfig.json

# The kernel lab: Debian's UML (with the xstate shim src/lab/uml.ts builds on AMX
# CPUs). Only if that cannot boot here, download a newer UML (scripts/fetch-uml.sh).
if ! scripts/lab --timeout 120 -- true >/dev/null 2>&1; then
  echo "install-deps: Debian's UML does not boot here; fetching another" >&2
  bash scripts/fetch-uml.sh
  scripts/lab --timeout 120 -- true
fi
