#!/usr/bin/env bash
# Provides a User-Mode Linux kernel that boots on this machine, in .cache/uml/.
#
# Why not just Debian 12's user-mode-linux? On CPUs with AMX (Sapphire Rapids
# and later) UML 6.1 and 6.12 panic at boot with "ptrace set fp regs failed,
# errno = 14": they size the FPU state for ptrace smaller than the host's
# XSAVE area. UML 7.x sizes it from the host. So: try the installed kernel
# first; if it cannot boot here, download Debian unstable's user-mode-linux
# and the libc it links against with apt (into a private apt directory: nothing
# on the system is upgraded), unpack them under .cache/uml/, and point the
# kernel's ELF interpreter at the unpacked loader with patchelf.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="$PWD/.cache/uml"
mkdir -p "$CACHE"

boots() { # boots KERNEL: does it reach init and run a command?
  local kernel=$1 dir
  dir=$(mktemp -d /tmp/synhold-umlprobe.XXXXXX)
  cat >"$dir/init.sh" <<EOS
#!/bin/sh
echo ok > $dir/ok
exec /sbin/halt -f
EOS
  chmod +x "$dir/init.sh"
  timeout 60 "$kernel" mem=128M rootfstype=hostfs rw init="$dir/init.sh" con=null con0=null,fd:1 \
    uml_dir="$dir/umld" </dev/null >"$dir/log" 2>&1 || true
  local ok=1
  [[ -f "$dir/ok" ]] && ok=0
  rm -rf "$dir"
  return $ok
}

write_env() { # KERNEL MODULES_DIR
  printf 'SYNHOLD_UML_KERNEL=%s\nSYNHOLD_UML_MODULES=%s\n' "$1" "$2" >"$CACHE/env"
  echo "fetch-uml: kernel lab uses $1" >&2
}

if [[ -f "$CACHE/env" ]]; then
  # shellcheck disable=SC1091
  source "$CACHE/env"
  if [[ -x "${SYNHOLD_UML_KERNEL:-}" && -d "${SYNHOLD_UML_MODULES:-}" ]]; then exit 0; fi
fi

if [[ -x /usr/bin/linux.uml ]] && boots /usr/bin/linux.uml; then
  write_env /usr/bin/linux.uml "$(ls -d /usr/lib/uml/modules/* | sort -V | tail -1)"
  exit 0
fi

echo "fetch-uml: /usr/bin/linux.uml cannot boot on this CPU; fetching Debian unstable's user-mode-linux" >&2
# The same mirror this machine already uses for Debian, suite unstable.
mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | awk '
  /security/ { next }
  $1 == "URIs:" { print $2; exit }
  $1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' || true)
[[ -n "$mirror" ]] || { echo "fetch-uml: cannot find this machine's Debian mirror in /etc/apt" >&2; exit 1; }
APT="$CACHE/apt"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/etc"
echo "deb $mirror unstable main" >"$APT/etc/sources.list"
aptopts=(-o "Dir::Etc::sourcelist=$APT/etc/sources.list" -o Dir::Etc::sourceparts=/nonexistent
         -o "Dir::State::lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o APT::Sandbox::User=root)
apt-get "${aptopts[@]}" update -qq
rm -rf "$CACHE/root" "$CACHE"/*.deb
(cd "$CACHE" && apt-get "${aptopts[@]}" download user-mode-linux libc6 >/dev/null)
mkdir -p "$CACHE/root"
for deb in "$CACHE"/*.deb; do dpkg-deb -x "$deb" "$CACHE/root"; done
rm -rf "$CACHE"/*.deb "$APT"
cp "$CACHE/root/usr/bin/linux.uml" "$CACHE/linux.uml"
patchelf --set-interpreter "$CACHE/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
         --set-rpath "$CACHE/root/usr/lib/x86_64-linux-gnu" "$CACHE/linux.uml"
if ! boots "$CACHE/linux.uml"; then
  echo "fetch-uml: Debian unstable's UML does not boot here either; the kernel lab is unavailable" >&2
  exit 1
fi
write_env "$CACHE/linux.uml" "$(ls -d "$CACHE"/root/usr/lib/uml/modules/* | sort -V | tail -1)"
