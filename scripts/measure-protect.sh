#!/usr/bin/env bash
# Measures protect on this kernel (nfqueue) and in the kernel lab (plug) and
# writes docs/PROTECT.md from the JSON (kept in docs/protect/, so the page can be regenerated). About 5 minutes on the host, 10 in the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run --silent build
tmp=docs/protect
mkdir -p "$tmp"
trap 'ip netns delete synhold-measure 2>/dev/null || true' EXIT
HOST_ARGS='{"backend":"nfqueue","reloads":200,"concurrency":50}'
LAB_ARGS='{"backend":"plug","reloads":60,"concurrency":8}'
ip netns add synhold-measure && ip -n synhold-measure link set lo up
ip netns exec synhold-measure node dist/test/helpers/measure-protect.js "$HOST_ARGS" >"$tmp/host.json"
ip netns delete synhold-measure
scripts/lab --timeout 3000 -- sh -c "ip netns add m && ip -n m link set lo up && ip netns exec m node dist/test/helpers/measure-protect.js '$LAB_ARGS'" >"$tmp/lab.json"
node dist/test/helpers/protect-report.js docs/PROTECT.md \
  "$tmp/host.json=ip netns exec NS node dist/test/helpers/measure-protect.js '$HOST_ARGS'" \
  "$tmp/lab.json=scripts/lab -- ip netns exec NS node dist/test/helpers/measure-protect.js '$LAB_ARGS'"
cat docs/PROTECT.md
