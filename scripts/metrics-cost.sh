#!/usr/bin/env bash
# What serving /metrics (prom-client) costs the daemon, on this kernel (nfqueue, a fresh namespace):
# for each CLI bundle given (default dist/synhold.cjs), `synhold daemon` without and with --metrics:
# the time from spawn until it serves (its unix socket; with --metrics, the HTTP port too), its RSS
# 2 s after start, one scrape's time (mean of 100), and its CPU time over 30 s idle.
#   scripts/metrics-cost.sh [BUNDLE ...]          ROUNDS=10 IDLE_S=30 by default
# Run it alone on the machine (flock -w 1800 /tmp/synhold-heavy.lock scripts/metrics-cost.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-10}
IDLE_S=${IDLE_S:-30}
PORT=${PORT:-19591}
bundles=("$@")
[[ ${#bundles[@]} -gt 0 ]] || bundles=(dist/synhold.cjs)
NS=synhold-mcost-$$-$(printf '%04x' $RANDOM)
# A state directory of its own: the daemon's socket is the one holder.sock under it.
export SYNHOLD_RUN_DIR=$(mktemp -d)
ip netns add "$NS"
ip -n "$NS" link set lo up
dpid=
cleanup() {
  [[ -n $dpid ]] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
  node dist/synhold.cjs --netns "$NS" teardown >/dev/null 2>&1 || true
  ip netns delete "$NS"
  rm -rf "$SYNHOLD_RUN_DIR"
}
trap cleanup EXIT
node dist/synhold.cjs --netns "$NS" setup --port 16000 --backend nfqueue >/dev/null
sock=$(echo "$SYNHOLD_RUN_DIR"/netns-*)/holder.sock
now_us() { echo $(($(date +%s%N) / 1000)); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tcp_up() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# Starts the daemon ($1: bundle, $2: with or without metrics); sets dpid and echoes microseconds until it serves.
start_daemon() {
  local t0 i
  t0=$(now_us)
  if [[ $2 == with ]]; then node "$1" --netns "$NS" daemon --metrics "127.0.0.1:$PORT" 2>/dev/null & else node "$1" --netns "$NS" daemon 2>/dev/null & fi
  dpid=$!
  for ((i = 0; i < 2000; i++)); do
    if [[ -S $sock ]] && { [[ $2 == without ]] || tcp_up; }; then break; fi
    sleep 0.002
  done
  echo $(($(now_us) - t0))
}
stop_daemon() {
  kill "$dpid"
  wait "$dpid" 2>/dev/null || true
  dpid=
}

for b in "${bundles[@]}"; do
  for mode in without with; do
    : >/tmp/mcost-start
    : >/tmp/mcost-rss
    for ((r = 0; r < ROUNDS; r++)); do
      start_daemon "$b" "$mode" >>/tmp/mcost-start
      sleep 2
      rss_kb "$dpid" >>/tmp/mcost-rss
      stop_daemon
    done
    start_daemon "$b" "$mode" >/dev/null
    scrape=-
    if [[ $mode == with ]]; then
      scrape=$(node -e "(async () => { const t0 = performance.now(); for (let i = 0; i < 100; i++) await (await fetch('http://127.0.0.1:$PORT/metrics')).text(); console.log(((performance.now() - t0) / 100).toFixed(2)); })()")
    fi
    c0=$(cpu_ticks "$dpid")
    sleep "$IDLE_S"
    c1=$(cpu_ticks "$dpid")
    stop_daemon
    printf '%s\tdaemon %s --metrics\tstart p50 %.1f ms\tRSS p50 %.1f MB\tscrape %s ms\tidle CPU %d ms in %d s\n' \
      "$b" "$mode" "$(median </tmp/mcost-start | awk '{print $1 / 1000}')" "$(median </tmp/mcost-rss | awk '{print $1 / 1024}')" \
      "$scrape" $(((c1 - c0) * 1000 / $(getconf CLK_TCK))) "$IDLE_S"
  done
done
rm -f /tmp/mcost-start /tmp/mcost-rss
