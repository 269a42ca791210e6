#!/usr/bin/env bash
# What synhold costs while not holding: loopback traffic set up vs bare, on this kernel (nfqueue) and in the
# kernel lab (plug: the prio root on lo), side by side in one run each; writes docs/STEADY-STATE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run --silent build
out=docs/steady-state
mkdir -p "$out"
host="node dist/bench/src/cost/steady-state.js --rounds 15 --seconds 2 --json"
lab="node dist/bench/src/cost/steady-state.js --rounds 5 --seconds 2 --json"
$host >"$out/host.json"
scripts/lab --timeout 3000 -- $lab >"$out/lab.json"
node dist/bench/src/cost/steady-state.js report docs/STEADY-STATE.md --notes "$out/notes.md" "$out/host.json=$host" "$out/lab.json=scripts/lab -- $lab"
cat docs/STEADY-STATE.md
