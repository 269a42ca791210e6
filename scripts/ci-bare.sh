#!/usr/bin/env bash
# Runs CI (.ci/run, exactly as CI does: CI=true, no stdin) on a clean clone, in a
# bare Debian 12 root that has none of synhold's Debian packages: only what a new
# machine of this project's kind has (Node.js 20 with npm, python3, make, g++, git).
# A package installed on this host by hand cannot hide a missing install step there.
#
#   scripts/ci-bare.sh [REV]          REV defaults to HEAD of this checkout
#   SYNHOLD_BARE_CMD='bash scripts/install-deps.sh && node --test dist/test/reload/systemd.test.js' \
#     scripts/ci-bare.sh [REV]          runs that instead of .ci/run (one suite, on a bare root)
#
# The base root is made once with debootstrap (Debian's package registry) and
# cached under $SYNHOLD_BARE_CACHE (default /var/cache/synhold-bare); each run gets
# a fresh copy-on-write overlay of it, thrown away afterwards. The run lives in its
# own mount and PID namespaces: when it ends (or this script is killed) every
# process it started, the kernel lab included, dies with it. Network namespaces it
# makes are its own too (ip netns keeps them under the run's private /run).
# Prints the tail of the log, the pass/fail counts and the duration; exits with
# .ci/run's status.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:-HEAD}
cache=${SYNHOLD_BARE_CACHE:-/var/cache/synhold-bare}
base=$cache/base

need() { command -v "$1" >/dev/null || { echo "ci-bare: needs $1 (apt-get install $2)" >&2; exit 2; }; }
[[ $(id -u) == 0 ]] || { echo "ci-bare: run as root" >&2; exit 2; }
need debootstrap debootstrap
need unshare util-linux

if [[ ! -f $base/.synhold-base-ok ]]; then
  echo "ci-bare: building the base root in $base (once)" >&2
  rm -rf "$base"; mkdir -p "$base"
  debootstrap --variant=minbase bookworm "$base" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  cp /etc/apt/sources.list.d/debian.sources "$base/etc/apt/sources.list.d/" 2>/dev/null && rm -f "$base/etc/apt/sources.list"
  cp /etc/resolv.conf "$base/etc/resolv.conf"
  # What a new machine of this kind has besides Debian's minimal base: the build
  # tools node-gyp needs, git and CA certificates.
  chroot "$base" /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates git python3 make g++ >/dev/null'
  # The machine's own trust store (its registries may be reached through a proxy
  # with a CA of its own, which a new machine of this kind trusts).
  cp -a /usr/local/share/ca-certificates/. "$base/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$base" update-ca-certificates >/dev/null
  # Node.js 20 and npm as this host has them (the same files, not a package from
  # another registry), with npm's configuration (node-gyp uses the local headers).
  node_pkg=$(dpkg -S "$(readlink -f "$(command -v node)")" | cut -d: -f1)
  dpkg -L "$node_pkg" | while read -r f; do [[ -f $f || -L $f ]] && printf '%s\n' "${f#/}"; done \
    | tar -C / -cf - -T - | tar -C "$base" -xf -
  # npm as this host runs it (it may have been updated past the package's own copy).
  npm_dir=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)
  rm -rf "${base:?}$npm_dir" && mkdir -p "$base$npm_dir" && cp -a "$npm_dir/." "$base$npm_dir/"
  for b in npm npx; do [[ -L $(command -v $b) ]] && cp -a "$(command -v $b)" "$base$(command -v $b)"; done
  for f in /root/.npmrc "$(npm config get globalconfig)"; do
    [[ -f $f ]] && mkdir -p "$base$(dirname "$f")" && cp "$f" "$base$f"
  done
  touch "$base/.synhold-base-ok"
fi

# Show that the root is bare: which of the project's packages it already has
# (only Debian's essential ones, such as coreutils, may be there).
pkgs=$(awk '!/^#/ && NF >= 2 && $2 != "-" { print $2 }' "$here/scripts/programs.txt" | sort -u)
have=$(chroot "$base" dpkg-query -W -f='${Package} ${db:Status-Status} ${Essential}\n' $pkgs 2>/dev/null | awk '$2 == "installed" { print $1 ($3 == "yes" ? "" : "(not essential)") }' | tr '\n' ' ' || true)  # dpkg-query fails for the absent ones: the point
echo "ci-bare: the bare root has $(chroot "$base" dpkg-query -W | wc -l) packages; of the project's $(wc -w <<<"$pkgs"): ${have:-none}" >&2

run=$(mktemp -d /var/tmp/synhold-bare-run.XXXXXX)
log=$run/ci.log
mkdir -p "$run/upper" "$run/work" "$run/root"
child=
cleanup() {
  [[ -n $child ]] && kill -KILL "$child" 2>/dev/null && wait "$child" 2>/dev/null
  umount -R "$run/root" 2>/dev/null || umount -lR "$run/root" 2>/dev/null || true
  rm -rf "$run/upper" "$run/work" "$run/checkout"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP
mount -t overlay overlay -o "lowerdir=$base,upperdir=$run/upper,workdir=$run/work" "$run/root"
# The checkout itself lives on the host's filesystem, bind-mounted into the root,
# as CI's clone does: the kernel lab reads it through hostfs, and a checkout on
# the overlay would make every file lookup of the guest's node processes dearer
# than on CI. (The lab's concurrent-reload test ran slower here than from a
# checkout on the host; the overlay is the suspected cause, not isolated.)
git clone -q "$here" "$run/checkout"
git -C "$run/checkout" checkout -q "$(git -C "$here" rev-parse "$rev")"
mkdir -p "$run/root/root/synhold"
echo "ci-bare: $(git -C "$here" log -1 --format='%h %s' "$rev")" >&2
echo "ci-bare: log in $log" >&2

start=$(date +%s)
set +e
# setpriv --pdeathsig: unshare dies with this script (even by SIGKILL); unshare's
# --kill-child then SIGKILLs the run's PID 1, and with it every process in its PID
# namespace, the kernel lab included.
setpriv --pdeathsig KILL unshare --mount --pid --fork --kill-child=KILL --propagation private /bin/bash -c '
  set -e
  r=$1
  mount -t proc proc "$r/proc"
  mount -t sysfs sysfs "$r/sys"
  # A new sysfs has no cgroup file systems under it; a booted machine has them (its init mounts
  # them), and systemd-nspawn (test/reload/systemd) stops without: "Failed to determine whether the
  # unified cgroups hierarchy is used". Those of the host, as it has them (v1, v2 or both).
  mount --rbind /sys/fs/cgroup "$r/sys/fs/cgroup"
  mount --rbind /dev "$r/dev"
  mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
  mount -t tmpfs -o mode=755 tmpfs "$r/run"
  mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
  cp /etc/resolv.conf "$r/etc/resolv.conf"
  mount --bind "$2" "$r/root/synhold"
  exec chroot "$r" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 CI=true ${NODE_EXTRA_CA_CERTS:+NODE_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS} \
    ${SSL_CERT_FILE:+SSL_CERT_FILE=$SSL_CERT_FILE} ${SSL_CERT_DIR:+SSL_CERT_DIR=$SSL_CERT_DIR} /bin/bash -c "cd /root/synhold && $3 </dev/null"
' _ "$run/root" "$run/checkout" "${SYNHOLD_BARE_CMD:-bash .ci/run}" >"$log" 2>&1 &
child=$!
wait "$child"   # in the background, so a signal to this script is handled at once
rc=$?
child=
set -e
secs=$(( $(date +%s) - start ))
tail -25 "$log"
echo "ci-bare: .ci/run exited $rc after ${secs}s ($(date -u -d@$secs +%Mm%Ss)); log: $log"
exit $rc
