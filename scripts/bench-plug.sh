#!/usr/bin/env bash
# Measures one plug + release round trip in-process vs spawning tc vs libnl's
# nl-qdisc-add, all in the same kernel-lab run (sch_plug is not on the host
# kernel), and writes docs/BENCH-PLUG.md from the JSON it produced.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run --silent build
out=$(mktemp)
trap 'rm -f "$out"' EXIT
scripts/lab --timeout 600 -- sh -c 'ip netns add b && ip netns exec b node dist/bench/src/plug-roundtrip.js' >"$out"
node dist/bench/src/plug-roundtrip-report.js "$out" docs/BENCH-PLUG.md
cat docs/BENCH-PLUG.md
