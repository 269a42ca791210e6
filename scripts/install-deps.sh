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

# The packages: those of every program in scripts/programs.txt (one table says what
# runs what), plus the ones no program names: debootstrap for scripts/ci-bare.sh, the
# arm64 libc of the cross compiler (scripts/prebuild.sh; only a Recommends of gcc-aarch64-linux-gnu;
# its libc6-arm64-cross is also what qemu-aarch64 runs the arm64 watchdog on in test/repo/arm64-prebuilt),
# and Debian's archive key (scripts/arm64-node.sh checks the arm64 packages with it).
mapfile -t PACKAGES < <(awk '!/^#/ && NF >= 2 && $2 != "-" { print $2 }' scripts/programs.txt | sort -u)
PACKAGES+=(debootstrap libc6-dev-arm64-cross debian-archive-keyring)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# promtool (tests: the alert rules and the /metrics exposition) comes from Debian's prometheus
# package, unpacked, not installed: installing it would start a Prometheus server (its postinst
# runs invoke-rc.d, which starts the init script where systemd is not PID 1).
if ! command -v promtool >/dev/null; then
  tmp=$(mktemp -d)
  apt-get update -qq
  (cd "$tmp" && apt-get download -qq prometheus 2>/dev/null)
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool
  install -m 0755 "$tmp/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$tmp"
fi
# Every program the product, tests, demo and scripts run must be here now: a
# missing one fails here, loudly, naming its package, not deep inside a test.
missing_programs=()
while read -r prog pkg _; do
  [[ -z $prog || $prog == \#* ]] && continue
  command -v "$prog" >/dev/null || missing_programs+=("$prog (Debian package $pkg)")
done < scripts/programs.txt
if ((${#missing_programs[@]})); then
  printf 'install-deps: missing after install: %s\n' "${missing_programs[@]}" >&2
  exit 1
fi
# Debian bookworm's arm64 Node.js and its libraries, unpacked under .cache/ (not installed) for
# test/repo/arm64-prebuilt; cached, so a second run only checks.
bash scripts/arm64-node.sh >/dev/null
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
rm -rf dist                         # no output of a moved or deleted source may linger (npm pack ships dist/src)
npm run --silent build          # tsc, the CLI bundled into one file (dist/cli.cjs) and its executable (dist/synhold.cjs), the bench's native load generator engine (cc: dist/bench/native/loadgen-engine)

# The kernel lab: Debian's UML (with the xstate shim bench/src/lab/uml.ts builds on AMX
# CPUs). Only if that cannot boot here, download a newer UML (scripts/fetch-uml.sh).
if ! scripts/lab --timeout 120 -- true >/dev/null 2>&1; then
  echo "install-deps: Debian's UML does not boot here; fetching another" >&2
  bash scripts/fetch-uml.sh
  scripts/lab --timeout 120 -- true
fi
