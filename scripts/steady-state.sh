#!/usr/bin/env bash
# What synhold costs while not holding: loopback traffic set up vs bare, on this kernel (nfqueue with each steering,
# always and while-holding; the always-on rule for a port no load uses; and the plug backend's clsact topology built
# by tc with a pfifo for the plug, which this kernel lacks: with its filters, the hook alone, and what the default leaves between
# holds) and in the kernel lab (plug, the default egress topology, clsact -> IFB with its filters only while holding, and the
# seed's prio root on lo), side by side in one run each, the conditions taking turns; writes
# docs/STEADY-STATE.md.
# Run it alone on an idle machine: the verdict needs the rounds' ratios to agree to about 1%.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run --silent build
out=docs/steady-state
mkdir -p "$out"
default="node dist/bench/src/cost/steady-state.js --rounds 80 --seconds 2 --json"
host="node dist/bench/src/cost/steady-state.js --rounds 40 --seconds 2 --other-port --json"
steering="node dist/bench/src/cost/steady-state.js --rounds 40 --seconds 2 --steerings always,while-holding --json"
standin="node dist/bench/src/cost/steady-state.js --rounds 80 --seconds 2 --stand-ins clsact --json"
standin2="node dist/bench/src/cost/steady-state.js --rounds 60 --seconds 2 --stand-ins clsact,clsact-idle --json"
standin3="node dist/bench/src/cost/steady-state.js --rounds 60 --seconds 2 --stand-ins clsact-between-holds,clsact-idle --json"
lab="node dist/bench/src/cost/steady-state.js --rounds 20 --seconds 2 --topologies auto,prio --json"
$default >"$out/host-default.json"
$steering >"$out/host-steering.json"
$host >"$out/host.json"
$standin >"$out/host-stand-in.json"
$standin2 >"$out/host-stand-in-2.json"
$standin3 >"$out/host-stand-in-3.json"
scripts/lab --timeout 5400 -- $lab >"$out/lab.json"
node dist/bench/src/cost/steady-state.js report docs/STEADY-STATE.md --notes "$out/notes.md" "$out/host-default.json=$default" "$out/host-steering.json=$steering" "$out/host.json=$host" "$out/host-stand-in.json=$standin" "$out/host-stand-in-2.json=$standin2" "$out/host-stand-in-3.json=$standin3" "$out/lab.json=scripts/lab -- $lab"
cat docs/STEADY-STATE.md
