#!/usr/bin/env bash
# The README's `npm run demo`: the seed's experiment, quick, on this machine.
#
#   nginx ("pong") behind HAProxy on :16000, a new connection per request at
#   concurrency 50, HAProxy reloaded every 100 ms with -sf, 6 s per strategy (at least 3 reloads):
#     none     plain reloads: some requests are reset
#     nfqueue  synhold on a kernel without sch_plug: none fail
#     plug     synhold's plug backend (in the kernel lab if this kernel lacks sch_plug,
#              with a baseline and `none` there too): none fail
#
# Installs what it needs first (Debian packages, npm ci, the build). As root.
# Everything runs in network namespaces the bench creates and deletes; the
# table goes to stdout, the figures to out/bench-demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "demo: run as root (the bench creates network namespaces): sudo npm run demo" >&2
  exit 1
fi

bash scripts/install-deps.sh

out=out/bench-demo
node dist/synhold.cjs bench --quick --strategies "${DEMO_STRATEGIES:-none,nfqueue,plug}" --out "$out"
echo
echo "figures: $out/latency.png ($out/latency.svg); raw data: $out/bench.json"
