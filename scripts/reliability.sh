#!/usr/bin/env bash
# Runs the fault matrix on this kernel (nfqueue) and in the kernel lab (plug) and writes
# docs/RELIABILITY.md from their measured release times. About 2 minutes on the host, 10 in the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run --silent build
out=docs/reliability
mkdir -p "$out"
rm -f "$out/host.jsonl" "$out/lab.jsonl"
SYNHOLD_FAULT_REPORT="$PWD/$out/host.jsonl" node --test --test-concurrency=1 dist/test/faults/nfqueue.test.js
scripts/lab --timeout 3000 -- env SYNHOLD_FAULT_REPORT="$PWD/$out/lab.jsonl" node --test --test-concurrency=1 dist/test/lab-guest/faults.test.js
node dist/bench/src/reliability/report.js docs/RELIABILITY.md \
  "$out/host.jsonl=SYNHOLD_FAULT_REPORT=FILE node --test dist/test/faults/nfqueue.test.js" \
  "$out/lab.jsonl=scripts/lab -- env SYNHOLD_FAULT_REPORT=FILE node --test dist/test/lab-guest/faults.test.js"
cat docs/RELIABILITY.md
