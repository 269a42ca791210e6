#!/usr/bin/env bash
# What `synhold protect` costs next to `node -e 0`, with and without the daemon, on this kernel
# (nfqueue, with each steering) and in the kernel lab (plug), side by side in one run each; writes docs/PROTECT-COST.md.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run --silent build
out=docs/protect-cost
mkdir -p "$out"
node dist/bench/src/cost/protect-cost.js --runs 30 --backend nfqueue --json >"$out/host.json"
node dist/bench/src/cost/protect-cost.js --runs 30 --backend nfqueue --steering while-holding --json >"$out/host-while-holding.json"
scripts/lab --timeout 3000 -- node dist/bench/src/cost/protect-cost.js --runs 25 --backend plug --json >"$out/lab.json"
node dist/bench/src/cost/protect-cost.js report docs/PROTECT-COST.md --notes "$out/notes.md" \
  "$out/host.json=node dist/bench/src/cost/protect-cost.js --runs 30 --backend nfqueue --json" \
  "$out/host-while-holding.json=node dist/bench/src/cost/protect-cost.js --runs 30 --backend nfqueue --steering while-holding --json" \
  "$out/lab.json=scripts/lab -- node dist/bench/src/cost/protect-cost.js --runs 25 --backend plug --json"
cat docs/PROTECT-COST.md
