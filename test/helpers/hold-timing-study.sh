#!/bin/sh
# Runs test/helpers/hold-timing-study.js (built) in a fresh network namespace, once per
# tcp_migrate_req value and hold variant, one JSON line per run to OUT (docs/PROTECT.md,
# "How short can a hold be"). Load: run it under `flock /tmp/synhold-heavy.lock`.
#   test/helpers/hold-timing-study.sh OUT RELOADS CONCURRENCY POLL_MS "0 1" "none full new-listener delay:30"
set -eu
out=$1 reloads=$2 conc=$3 poll=$4 migrates=$5 holds=$6
root=$(cd "$(dirname "$0")/../.." && pwd)
ns=synhold-study-$$
ip netns add "$ns"
cleanup() { ip netns exec "$ns" node "$root/dist/synhold.cjs" teardown >/dev/null 2>&1 || true; ip netns del "$ns"; }
trap cleanup EXIT INT TERM
ip -n "$ns" link set lo up
ip netns exec "$ns" node "$root/dist/synhold.cjs" setup --port 16000 --migrate-req off >/dev/null
for m in $migrates; do
  for h in $holds; do
    ip netns exec "$ns" sh -c "echo $m > /proc/sys/net/ipv4/tcp_migrate_req"
    timeout 900 ip netns exec "$ns" node "$root/dist/test/helpers/hold-timing-study.js" \
      "{\"hold\":\"$h\",\"reloads\":$reloads,\"concurrency\":$conc,\"pollMs\":$poll}" >>"$out"
  done
done
