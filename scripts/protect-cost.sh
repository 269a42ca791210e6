#!/usr/bin/env bash
# What `synhold protect` costs next to `node -e 0`, with and without the daemon, on this kernel
# (nfqueue, with each steering) and in the kernel lab (plug), side by side in one run each; writes
# docs/PROTECT-COST.md. ROUNDS (default 3) repeats the three runs, so the page shows the spread between
# runs as well as within one (a 2-CPU VM's speed drifts between minutes).
#
#   scripts/protect-cost.sh            ROUNDS=1 scripts/protect-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
npm run --silent build
out=docs/protect-cost
mkdir -p "$out"
rm -f "$out"/*.json
host="node dist/bench/src/cost/protect-cost.js --runs 30 --backend nfqueue --json"
while_holding="node dist/bench/src/cost/protect-cost.js --runs 30 --backend nfqueue --steering while-holding --json"
lab="node dist/bench/src/cost/protect-cost.js --runs 25 --backend plug --json"
specs=()
for ((i = 1; i <= rounds; i++)); do
  $host >"$out/host-$i.json"
  $while_holding >"$out/host-while-holding-$i.json"
  scripts/lab --timeout 3000 -- $lab >"$out/lab-$i.json"
  specs+=("$out/host-$i.json=$host" "$out/host-while-holding-$i.json=$while_holding" "$out/lab-$i.json=scripts/lab -- $lab")
done
node dist/bench/src/cost/protect-cost.js report docs/PROTECT-COST.md --notes "$out/notes.md" "${specs[@]}"
cat docs/PROTECT-COST.md
