#!/usr/bin/env bash
# What a local client sees when its SYN is dropped at the plug's --limit (docs/BACKENDS.md, "The plug's
# limit"). Runs in the kernel lab: a namespace, a TCP server on 127.0.0.1:16000, `setup --limit 150`
# (room for two 74-byte SYNs), a manual hold, five clients at once; every 0.5 s the SYN-SENT sockets'
# timers from `ss -tni` (the oracle), then the release after 8 s. Bounded: the hold has --max-hold 20s,
# the clients give up at 19 s, the lab run at 120 s.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f dist/synhold.cjs ]] || npm run --silent build
exec scripts/lab --timeout 120 -- sh -c '
set -u
ns=synhold-limit
ip netns add $ns && ip -n $ns link set lo up
S="node dist/synhold.cjs --netns $ns"
ip netns exec $ns node -e "require(\"net\").createServer((s) => s.end()).listen(16000, \"127.0.0.1\")" &
srv=$!
sleep 1
$S setup --port 16000 --limit 150 >/dev/null
$S plug --max-hold 20s >/dev/null
ip netns exec $ns node -e "
const net = require(\"net\"); const t0 = Date.now(); let n = 0;
const done = () => { if (++n === 5) process.exit(0); };
for (let i = 0; i < 5; i++) {
  const s = net.connect(16000, \"127.0.0.1\");
  s.on(\"connect\", () => { console.log(\"client\", i, \"connected at\", Date.now() - t0, \"ms\"); s.destroy(); done(); });
  s.on(\"error\", (e) => { console.log(\"client\", i, e.code, \"at\", Date.now() - t0, \"ms\"); done(); });
}
setTimeout(() => process.exit(0), 19000);" &
cl=$!
for i in $(seq 1 16); do
  sleep 0.5
  echo "t=$((i * 500)) ms, SYN-SENT sockets: $(ip netns exec $ns ss -Htni state syn-sent | grep -o "rto:[^ ]*\|backoff:[^ ]*\|retrans:[^ ]*" | tr "\n" " ")"
done
tc -n $ns -s qdisc show dev lo | grep -A2 "qdisc plug"
$S release
wait $cl
echo "net.ipv4.tcp_syn_retries = $(cat /proc/sys/net/ipv4/tcp_syn_retries)"
$S teardown >/dev/null
kill $srv
ip netns del $ns
'
