#!/usr/bin/env bash
# Unpacks Debian bookworm's arm64 Node.js (the nodejs package, 18.x, and what it
# depends on) into a private root, for test/repo/arm64-prebuilt.test.ts, which
# runs the linux-arm64 prebuilt addon in it under qemu-aarch64. Prints the root.
#
# apt-get resolves and downloads with a private configuration and state under
# .cache/arm64-node/apt (arm64 as its only architecture, an empty package
# database): the machine's dpkg is not given a foreign architecture and nothing
# is installed; dpkg-deb -x unpacks each package. Cached: a complete root
# (.cache/arm64-node/root/.complete) is used as it is. Downloads are retried;
# a failure is one line on stderr and exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=$PWD/.cache/arm64-node
root=$cache/root
if [[ -f $root/.complete ]]; then
  echo "$root"
  exit 0
fi

apt_dir=$cache/apt
rm -rf "$apt_dir" "$root.tmp"
mkdir -p "$apt_dir"/{lists/partial,archives/partial,parts} "$root.tmp"
: >"$apt_dir/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f $keyring ]] || { echo "arm64-node: $keyring missing (Debian package debian-archive-keyring)" >&2; exit 1; }
cat >"$apt_dir/sources.list" <<EOF
deb [signed-by=$keyring] http://deb.debian.org/debian bookworm main
deb [signed-by=$keyring] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=$keyring] http://deb.debian.org/debian-security bookworm-security main
EOF
APT=(apt-get -q -o "Dir::State=$apt_dir" -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::State::status=$apt_dir/status"
  -o "Dir::Cache=$apt_dir" -o "Dir::Cache::Archives=$apt_dir/archives" -o "Dir::Etc::SourceList=$apt_dir/sources.list"
  -o "Dir::Etc::SourceParts=$apt_dir/parts" -o "Dir::Etc::PreferencesParts=$apt_dir/parts"
  -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o APT::Sandbox::User=root)

# apt-get exits 0 on some failed index downloads (it warns "W: Failed to fetch"): those count as failures too.
attempt() { # LOG CMD...
  local log=$1
  shift
  "$@" >"$log" 2>&1 && ! grep -q '^\(W: Failed\|E: \)' "$log"
}
fetch() {
  local i log=$apt_dir/log
  for i in 1 2 3; do
    if attempt "$log" "${APT[@]}" update && attempt "$log" "${APT[@]}" install --download-only -y --no-install-recommends nodejs; then
      return 0
    fi
    sleep $((i * 5))
  done
  echo "arm64-node: cannot download Debian bookworm's arm64 nodejs from deb.debian.org after 3 attempts: $(grep -m1 '^\(W: Failed\|E: \)' "$log" || tail -n1 "$log")" >&2
  exit 1
}
fetch
debs=("$apt_dir"/archives/*.deb)
for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$root.tmp"; done
[[ -x $root.tmp/usr/bin/node ]] || { echo "arm64-node: no usr/bin/node in the unpacked packages (${debs[*]##*/})" >&2; exit 1; }
printf '%s\n' "${debs[@]##*/}" >"$root.tmp/.complete"
rm -rf "$root"
mv "$root.tmp" "$root"
rm -rf "$apt_dir"
echo "$root"
