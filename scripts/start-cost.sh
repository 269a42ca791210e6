#!/usr/bin/env bash
# What a CLI bundle costs at start, for each bundle given (e.g. two builds to compare):
# `node BUNDLE --version` and `node BUNDLE --netns NS protect -- true` (nfqueue, a fresh namespace),
# the bundles interleaved round by round, N rounds (40), wall time from the shell.
#   flock -w 1800 /tmp/synhold-heavy.lock scripts/start-cost.sh BUNDLE [BUNDLE ...]
set -euo pipefail
tmp=$(mktemp -d)
cd "$(dirname "$0")/.."
NS=synhold-start-$$-$(printf "%04x" $RANDOM)
ip netns add $NS; ip -n $NS link set lo up
trap 'node dist/synhold.cjs --netns $NS teardown >/dev/null 2>&1; ip netns del $NS; rm -rf "$tmp"' EXIT
node dist/synhold.cjs --netns $NS setup --port 16000 --backend nfqueue >/dev/null
N=${N:-40}
for f in "$@"; do : > "$tmp"/t-$(basename $f)-v; : > "$tmp"/t-$(basename $f)-p; done
for i in $(seq $N); do
  for f in "$@"; do
    b=$(basename $f)
    s=$(date +%s%N); node $f --version >/dev/null; e=$(date +%s%N); echo $(( (e-s)/1000 )) >> "$tmp"/t-$b-v
    s=$(date +%s%N); node $f --netns $NS protect -- true 2>/dev/null; e=$(date +%s%N); echo $(( (e-s)/1000 )) >> "$tmp"/t-$b-p
  done
done
for f in "$@"; do
  b=$(basename $f)
  for k in v p; do
    sort -n "$tmp"/t-$b-$k | awk -v f=$f -v k=$k '{a[NR]=$1} END {printf "%s\t%s\tn=%d\tp50 %.1f ms\tp90 %.1f ms\n", f, (k=="v"?"--version":"--netns NS protect -- true"), NR, a[int((NR+1)/2)]/1000, a[int(NR*0.9)]/1000}'
  done
done
