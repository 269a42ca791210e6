#!/usr/bin/env bash
# protect at real-time priority vs --priority normal on one CPU, taking turns: run as
#   scripts/lab --timeout 500 -- bash scripts/priority-lab.sh [RUNS]
# (inside the kernel lab: User-Mode Linux, one CPU, plug backend). Prints each run's wall time
# (ms) and the median of each. Why it exists: docs/PROTECT.md "Priority while holding" (on one
# CPU protect holds at normal priority; this is the measurement behind that rule). Run it from a
# build made before src/host/sched.ts skipped one CPU to see the difference; after it, both rows
# hold at normal priority and should agree.
set -euo pipefail
runs=${1:-10}
ns=synhold-prio-$$
ip netns add "$ns"
trap 'node dist/synhold.cjs --netns "$ns" teardown >/dev/null 2>&1 || true; ip netns del "$ns"' EXIT
ip -n "$ns" link set lo up
node dist/synhold.cjs --netns "$ns" setup --port 16000 --backend plug >/dev/null
for _ in 1 2 3; do node dist/synhold.cjs --netns "$ns" protect -- true 2>/dev/null; done # warm the code cache
out=$(mktemp)
for _ in $(seq "$runs"); do
  for p in realtime normal; do
    s=$(date +%s%N)
    node dist/synhold.cjs --netns "$ns" protect --priority "$p" -- true 2>/dev/null
    echo "$p $((($(date +%s%N) - s) / 1000000))" | tee -a "$out"
  done
done
for p in realtime normal; do
  grep "^$p " "$out" | sort -k2,2n | awk -v p="$p" '{v[NR] = $2} END {print p, "median", v[int((NR + 1) / 2)], "ms of", NR, "runs"}'
done
rm -f "$out"
