#!/usr/bin/env bash
# Capture golden netlink bytes from the real iproute2 `tc` and `ip` tools, for codec tests.
#
# Each command runs under strace inside a throwaway network namespace; the strace hex dumps
# (-e write=all / -e read=all, which dump the whole iov of sendmsg/sendto/recvmsg, independent
# of -s) are parsed back into bytes, split into netlink messages, and one JSON fixture per
# command is written to test/fixtures/rtnl/. See test/fixtures/README.md for the fields.
#
# Usage:
#   scripts/capture-fixtures.sh            capture on this kernel, then (if linux.uml exists)
#                                          run the same commands in User-Mode Linux, where
#                                          sch_plug, sch_prio and cls_fw are loadable, and add
#                                          its replies to each fixture as "uml"
#   scripts/capture-fixtures.sh --no-uml   this kernel only
#   OUT=/some/dir scripts/capture-fixtures.sh   write elsewhere (default test/fixtures/rtnl)
#
# Internal: `--inside-uml DIR` is what the UML init script runs; it captures into DIR.
#
# Needs root (CAP_NET_ADMIN, ip netns), strace, node, iproute2.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/scripts/capture-fixtures.sh"
MODE=host
UML=auto
case "${1:-}" in
  --no-uml) UML=no ;;
  --inside-uml) MODE=uml; OUT=$2 ;;
  "") ;;
  *) echo "usage: $0 [--no-uml]" >&2; exit 64 ;;
esac
OUT=${OUT:-$ROOT/test/fixtures/rtnl}
NS=synhold-fx-$$
# Under /var/tmp on the host: the UML guest mounts its own tmpfs over /tmp but sees /var/tmp.
if [ "$MODE" = uml ]; then TMP=$(mktemp -d /tmp/synhold-fx.XXXXXX); else TMP=$(mktemp -d /var/tmp/synhold-fx.XXXXXX); fi
UML_MODULES=/usr/lib/uml/modules

cleanup() {
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

for tool in strace node tc ip; do
  command -v "$tool" >/dev/null || { echo "capture-fixtures: $tool not found" >&2; exit 69; }
done

IPROUTE2=$(tc -V)
STRACE_VERSION=$(strace -V | head -n1)
KERNEL=$(uname -r)
[ "$MODE" = uml ] && KERNEL="$KERNEL (User-Mode Linux)"

# ---------------------------------------------------------------------------------------------
# The parser: strace log -> netlink messages -> fixture JSON. Node, because the project is Node.
cat >"$TMP/parse.mjs" <<'JS'
import fs from 'node:fs';
import os from 'node:os';

const [logPath, metaPath, outPath] = process.argv.slice(2);
const meta = JSON.parse(fs.readFileSync(metaPath, 'utf8'));

// --- strace log -> syscalls with their bytes -------------------------------------------------
// Lines look like (pid prefix present with -f -o):
//   7681  sendmsg(3, {...}, 0) = 32
//    * 32 bytes in buffer 0
//    | 00000  20 00 00 00 11 00 05 00  16 61 03 6b 00 00 00 00   ...a.k.... |
const callRe = /^(?:(\d+) +)?(sendmsg|sendto|recvmsg|recvfrom)\((\d+), (.*)\) += (-?\d+)(?: .*)?$/;
const calls = [];
let cur = null;
let bufStart = 0;
for (const line of fs.readFileSync(logPath, 'utf8').split('\n')) {
  if (line === '') continue;
  let m;
  if (line.startsWith(' | ')) {
    if (!cur) throw new Error(`hex dump before any syscall: ${line}`);
    const off = parseInt(line.slice(3, 8), 16);
    if (off !== cur.data.length - bufStart) throw new Error(`hex dump offset ${off} out of order in ${cur.name}`);
    for (const h of line.slice(10, 58).trim().split(/ +/)) {
      if (!/^[0-9a-f]{2}$/.test(h)) throw new Error(`bad hex byte ${JSON.stringify(h)} in: ${line}`);
      cur.data.push(parseInt(h, 16));
    }
  } else if ((m = /^ \* (\d+) bytes in buffer (\d+)$/.exec(line))) {
    bufStart = cur.data.length;
  } else if ((m = callRe.exec(line))) {
    cur = { pid: m[1], name: m[2], fd: Number(m[3]), args: m[4], ret: Number(m[5]), data: [] };
    cur.send = cur.name.startsWith('send');
    cur.peek = /MSG_PEEK/.test(cur.args);
    bufStart = 0;
    calls.push(cur);
  } else if (/^(?:\d+ +)?\+\+\+ |^(?:\d+ +)?--- SIG/.test(line)) {
    // process exit / signal lines: nothing to take
  } else if (/^(?:\d+ +)?(sendmsg|sendto|recvmsg|recvfrom)\(\d+,.*\) += -1 /.test(line)) {
    cur = null; // failed syscall (EAGAIN etc.): no data
  } else {
    throw new Error(`unrecognised strace line (unfinished/resumed or new format?): ${line}`);
  }
}

// --- syscalls -> datagrams -> netlink messages ------------------------------------------------
const datagrams = [];
for (const c of calls) {
  if (c.peek || c.ret <= 0) continue; // MSG_PEEK|MSG_TRUNC length probes carry no bytes
  const buf = Buffer.from(c.data);
  if (buf.length !== c.ret) throw new Error(`${c.name} on fd ${c.fd} returned ${c.ret} but strace dumped ${buf.length} bytes`);
  const msgs = [];
  let o = 0;
  while (o < buf.length) {
    if (buf.length - o < 16) throw new Error(`trailing ${buf.length - o} bytes after netlink messages`);
    const len = buf.readUInt32LE(o);
    if (len < 16 || o + len > buf.length) throw new Error(`nlmsg_len ${len} at ${o} does not fit the ${buf.length}-byte datagram`);
    msgs.push({
      bytes: buf.subarray(o, o + len), len, type: buf.readUInt16LE(o + 4), flags: buf.readUInt16LE(o + 6),
      seq: buf.readUInt32LE(o + 8), pid: buf.readUInt32LE(o + 12),
    });
    o += (len + 3) & ~3;
  }
  if (o - buf.length >= 4) throw new Error('message lengths overrun the datagram');
  datagrams.push({ send: c.send, fd: c.fd, pid: c.pid, buf, msgs });
}

const TYPES = {
  1: 'NLMSG_NOOP', 2: 'NLMSG_ERROR', 3: 'NLMSG_DONE', 4: 'NLMSG_OVERRUN',
  16: 'RTM_NEWLINK', 17: 'RTM_DELLINK', 18: 'RTM_GETLINK', 19: 'RTM_SETLINK',
  20: 'RTM_NEWADDR', 21: 'RTM_DELADDR', 22: 'RTM_GETADDR',
  36: 'RTM_NEWQDISC', 37: 'RTM_DELQDISC', 38: 'RTM_GETQDISC',
  40: 'RTM_NEWTCLASS', 41: 'RTM_DELTCLASS', 42: 'RTM_GETTCLASS',
  44: 'RTM_NEWTFILTER', 45: 'RTM_DELTFILTER', 46: 'RTM_GETTFILTER',
  48: 'RTM_NEWACTION', 49: 'RTM_DELACTION', 50: 'RTM_GETACTION',
  100: 'RTM_NEWCHAIN', 101: 'RTM_DELCHAIN', 102: 'RTM_GETCHAIN',
};
const typeName = (t) => TYPES[t] ?? `0x${t.toString(16)}`;
const typeNum = (name) => Number(Object.keys(TYPES).find((k) => TYPES[k] === name));

// NLM_F_* bits 8..11 mean different things for NEW, DEL and GET requests (include/uapi/linux/netlink.h).
function flagNames(type, flags) {
  const base = [[0x1, 'NLM_F_REQUEST'], [0x2, 'NLM_F_MULTI'], [0x4, 'NLM_F_ACK'], [0x8, 'NLM_F_ECHO'],
    [0x10, 'NLM_F_DUMP_INTR'], [0x20, 'NLM_F_DUMP_FILTERED']];
  const name = TYPES[type] ?? '';
  let high;
  if (type === 2 || type === 3) high = [[0x100, 'NLM_F_CAPPED'], [0x200, 'NLM_F_ACK_TLVS']];
  else if (/_NEW/.test(name) && flags & 1) high = [[0x100, 'NLM_F_REPLACE'], [0x200, 'NLM_F_EXCL'], [0x400, 'NLM_F_CREATE'], [0x800, 'NLM_F_APPEND']];
  else if (/_DEL/.test(name)) high = [[0x100, 'NLM_F_NONREC'], [0x200, 'NLM_F_BULK']];
  else if (/_GET/.test(name)) high = [[0x100, 'NLM_F_ROOT'], [0x200, 'NLM_F_MATCH'], [0x400, 'NLM_F_ATOMIC']];
  else high = [];
  const out = [];
  let rest = flags;
  for (const [bit, n] of [...base, ...high]) if (flags & bit) { out.push(n); rest &= ~bit; }
  if (rest) out.push(`0x${rest.toString(16)}`);
  return out.join('|') || '0';
}

const ERRNO = Object.fromEntries(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));

// NLMSG_ERROR / NLMSG_DONE body: int error, then (NLMSG_ERROR) the echoed request - whole, or
// only its header when NLM_F_CAPPED - then extack TLVs when NLM_F_ACK_TLVS (netlink.h).
function decodeStatus(msg) {
  const b = msg.bytes;
  if (b.length < 20) return { error: 0 };
  const error = b.readInt32LE(16);
  const out = { error, errno: error < 0 ? (ERRNO[-error] ?? `errno ${-error}`) : null };
  let o = 20;
  if (msg.type === 2) {
    const echoed = b.readUInt32LE(20);
    out.echoedRequest = msg.flags & 0x100 ? 'header only (NLM_F_CAPPED)' : `whole request, ${echoed} bytes`;
    o += msg.flags & 0x100 ? 16 : (echoed + 3) & ~3;
  }
  if (msg.flags & 0x200) {
    while (o + 4 <= b.length) {
      const len = b.readUInt16LE(o);
      const type = b.readUInt16LE(o + 2) & 0x3fff;
      if (len < 4) break;
      const v = b.subarray(o + 4, o + len);
      if (type === 1) out.extack = v.toString('utf8').replace(/\0+$/, '');          // NLMSGERR_ATTR_MSG
      else if (type === 2) out.extackOffset = v.readUInt32LE(0);                     // NLMSGERR_ATTR_OFFS
      else if (type === 5) out.extackMissingType = v.readUInt32LE(0);                // NLMSGERR_ATTR_MISS_TYPE
      else if (type === 6) out.extackMissingNest = v.readUInt32LE(0);                // NLMSGERR_ATTR_MISS_NEST
      else (out.extackOther ??= []).push({ type, hex: v.toString('hex') });
      o += (len + 3) & ~3;
    }
  }
  return out;
}

// Informational decode of the fixed header, so a reader can check a fixture at a glance.
function decodeHeader(m) {
  const b = m.bytes;
  const h = { nlmsg_len: m.len, nlmsg_type: typeName(m.type), nlmsg_flags: flagNames(m.type, m.flags),
    nlmsg_seq: m.seq, nlmsg_pid: m.pid };
  const hex32 = (v) => `0x${v.toString(16).padStart(8, '0')}`;
  if (m.type >= 36 && m.type <= 47 && b.length >= 36) {
    h.tcmsg = { tcm_family: b[16], tcm_ifindex: b.readInt32LE(20), tcm_handle: hex32(b.readUInt32LE(24)),
      tcm_parent: hex32(b.readUInt32LE(28)), tcm_info: hex32(b.readUInt32LE(32)) };
  } else if (m.type >= 16 && m.type <= 19 && b.length >= 32) {
    h.ifinfomsg = { ifi_family: b[16], ifi_type: b.readUInt16LE(18), ifi_index: b.readInt32LE(20),
      ifi_flags: hex32(b.readUInt32LE(24)), ifi_change: hex32(b.readUInt32LE(28)) };
  }
  return h;
}

// --- pick the request this fixture is about, and the datagrams that answer it ----------------
const want = typeNum(meta.messageType);
if (!want) throw new Error(`unknown message type ${meta.messageType}`);
const sent = datagrams.filter((d) => d.send).flatMap((d) => d.msgs.map((m) => ({ d, m })));
// ip probes RTM_NEWLINK support with an empty request at seq 0 before the real one: skip it.
const hits = sent.filter(({ m }) => m.type === want && !(m.seq === 0 && m.len === 32));
if (hits.length !== 1) {
  throw new Error(`expected exactly one ${meta.messageType} sent by "${meta.command}", found ${hits.length}` +
    ` (sent: ${sent.map(({ m }) => typeName(m.type)).join(', ') || 'nothing'})`);
}
const { d: reqDg, m: req } = hits[0];
const replies = datagrams.filter((d) => !d.send && d.fd === reqDg.fd && d.pid === reqDg.pid &&
  d.msgs.some((m) => m.seq === req.seq));
for (const d of replies) {
  if (d.msgs.some((m) => m.seq !== req.seq)) throw new Error('a reply datagram mixes sequence numbers');
}
const replyMsgs = replies.flatMap((d) => d.msgs);
const status = replyMsgs.find((m) => m.type === 2) ?? replyMsgs.find((m) => m.type === 3);
const result = status ? decodeStatus(status) : { error: null, note: 'no NLMSG_ERROR/NLMSG_DONE seen' };
const dataMsgs = replyMsgs.filter((m) => m.type !== 2 && m.type !== 3);
if (dataMsgs.length) result.messages = dataMsgs.map((m) => typeName(m.type)).join(', ');
result.accepted = result.error === 0;

const fixture = {
  command: meta.command,
  iproute2: meta.iproute2,
  kernel: meta.kernel,
  capturedWith: meta.capturedWith,
  note: meta.note,
  ifindex: meta.ifindex,
  messageType: meta.messageType,
  flags: flagNames(req.type, req.flags),
  requestHex: req.bytes.toString('hex'),
  header: decodeHeader(req),
  alsoSent: sent.filter((x) => x !== hits[0]).map(({ m }) => `${typeName(m.type)} ${flagNames(m.type, m.flags)}`),
  exitStatus: meta.exitStatus,
  stdout: meta.stdout,
  stderr: meta.stderr,
  result,
  replyHex: replies.map((d) => d.buf.toString('hex')),
};
if (!fixture.alsoSent.length) delete fixture.alsoSent;
fs.writeFileSync(outPath, JSON.stringify(fixture, null, 2) + '\n');
JS

# Merge the UML run's fixtures into the host's: same command, same request bytes apart from
# nlmsg_seq (bytes 8..11) and nlmsg_pid (12..15), that kernel's reply added under "uml".
cat >"$TMP/merge.mjs" <<'JS'
import fs from 'node:fs';
import path from 'node:path';
const [hostDir, umlDir] = process.argv.slice(2);
const mask = (hex) => hex.slice(0, 16) + '0'.repeat(16) + hex.slice(32);
for (const f of fs.readdirSync(umlDir).filter((n) => n.endsWith('.json')).sort()) {
  const hostPath = path.join(hostDir, f);
  if (!fs.existsSync(hostPath)) throw new Error(`UML produced ${f}, the host did not`);
  const host = JSON.parse(fs.readFileSync(hostPath, 'utf8'));
  const uml = JSON.parse(fs.readFileSync(path.join(umlDir, f), 'utf8'));
  if (host.command !== uml.command) throw new Error(`${f}: commands differ`);
  const same = mask(host.requestHex) === mask(uml.requestHex);
  host.uml = {
    kernel: uml.kernel,
    ifindex: uml.ifindex,
    requestSameExceptSeqPid: same,
    ...(same ? {} : { requestHex: uml.requestHex }),
    exitStatus: uml.exitStatus, stdout: uml.stdout, stderr: uml.stderr,
    result: uml.result, replyHex: uml.replyHex,
  };
  fs.writeFileSync(hostPath, JSON.stringify(host, null, 2) + '\n');
  console.log(`${f}: uml ${uml.result.accepted ? 'accepted' : `rejected ${uml.result.errno} (${uml.result.extack ?? ''})`}${same ? '' : ' REQUEST DIFFERS'}`);
}
JS

# ---------------------------------------------------------------------------------------------
ns() { ip netns exec "$NS" "$@"; }

ifindex_json() {
  ip -n "$NS" -j link show | node -e '
    let s = ""; process.stdin.on("data", (c) => (s += c)).on("end", () => {
      const o = {}; for (const l of JSON.parse(s)) o[l.ifname] = l.ifindex;
      process.stdout.write(JSON.stringify(o));
    });'
}

# cap FILE MESSAGE_TYPE NOTE -- COMMAND...
# Runs COMMAND in the namespace under strace and writes $OUT/FILE.json. A non-zero exit of the
# command is expected for what this kernel rejects; a parse failure aborts the whole run.
cap() {
  local name=$1 type=$2 note=$3
  shift 4
  local log="$TMP/$name.strace" status=0
  local ifx
  ifx=$(ifindex_json)
  ns strace -f -qq -e signal=none -o "$log" \
    -e trace=sendmsg,sendto,recvmsg,recvfrom -e write=all -e read=all -s 64 \
    "$@" >"$TMP/$name.stdout" 2>"$TMP/$name.stderr" || status=$?
  COMMAND="$*" TYPE="$type" NOTE="$note" STATUS="$status" IFX="$ifx" \
  STDOUT_FILE="$TMP/$name.stdout" STDERR_FILE="$TMP/$name.stderr" \
  IPROUTE2="$IPROUTE2" KERNEL="$KERNEL" \
  CAPTURED_WITH="$STRACE_VERSION: strace -f -qq -e signal=none -e trace=sendmsg,sendto,recvmsg,recvfrom -e write=all -e read=all" \
  node -e '
    const fs = require("fs"), e = process.env;
    fs.writeFileSync(process.argv[1], JSON.stringify({
      command: e.COMMAND, messageType: e.TYPE, note: e.NOTE, exitStatus: Number(e.STATUS),
      ifindex: JSON.parse(e.IFX), iproute2: e.IPROUTE2, kernel: e.KERNEL, capturedWith: e.CAPTURED_WITH,
      stdout: fs.readFileSync(e.STDOUT_FILE, "utf8"), stderr: fs.readFileSync(e.STDERR_FILE, "utf8"),
    }));' "$TMP/$name.meta.json"
  node "$TMP/parse.mjs" "$log" "$TMP/$name.meta.json" "$OUT/$name.json"
  printf '%-45s exit %s  %s\n' "$name" "$status" "$(tr '\n' ' ' <"$TMP/$name.stderr" | cut -c1-90)"
}

# Setup and state-shaping steps that are not fixtures; allowed to fail (say so).
run() { ns "$@" >/dev/null 2>&1 || echo "  (setup: '$*' failed, continuing)"; }

capture_all() {
  mkdir -p "$OUT"
  ip netns add "$NS"
  ip -n "$NS" link set lo up

  # --- sch_plug at the root of lo: the plug backend's whole life cycle -----------------------
  cap qdisc-add-plug-limit RTM_NEWQDISC \
    "Create a plug qdisc. tc encodes 'limit N' as struct tc_plug_qopt {action=TCQ_PLUG_LIMIT(3), limit=N}; the kernel's plug_init reads only .limit and the new qdisc starts plugged." \
    -- tc qdisc add dev lo root handle 1: plug limit 32768
  cap qdisc-change-plug-block RTM_NEWQDISC \
    "Start a new buffering epoch: tc_plug_qopt {action=TCQ_PLUG_BUFFER(0), limit=0}. 'change' sends no NLM_F_CREATE/EXCL." \
    -- tc qdisc change dev lo root handle 1: plug block
  cap qdisc-change-plug-release RTM_NEWQDISC \
    "Release the previous epoch: tc_plug_qopt {action=TCQ_PLUG_RELEASE_ONE(1)}. iproute2's keyword is 'release' (q_plug.c); 'release_one' is rejected by tc itself and never reaches the kernel." \
    -- tc qdisc change dev lo root handle 1: plug release
  cap qdisc-change-plug-release-indefinite RTM_NEWQDISC \
    "Unplug: tc_plug_qopt {action=TCQ_PLUG_RELEASE_INDEFINITE(2)}." \
    -- tc qdisc change dev lo root handle 1: plug release_indefinite
  cap qdisc-change-plug-limit RTM_NEWQDISC \
    "Change the byte limit: tc_plug_qopt {action=TCQ_PLUG_LIMIT(3), limit=10000}." \
    -- tc qdisc change dev lo root handle 1: plug limit 10000
  run tc qdisc del dev lo root

  # --- the seed's topology: prio root, plug on band 4, pfifo on band 1, u32 steering SYNs -----
  cap qdisc-add-prio-bands4-priomap RTM_NEWQDISC \
    "The seed's root: prio with 4 bands; TCA_OPTIONS is struct tc_prio_qopt {int bands; __u8 priomap[16]} (20 bytes)." \
    -- tc qdisc add dev lo root handle 1: prio bands 4 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1
  cap qdisc-add-plug-child RTM_NEWQDISC \
    "The seed's hold queue: plug under prio band 4 (class 1:4)." \
    -- tc qdisc add dev lo parent 1:4 handle 30: plug limit 32768
  cap qdisc-add-pfifo-child RTM_NEWQDISC \
    "pfifo under prio band 1; TCA_OPTIONS is struct tc_fifo_qopt {__u32 limit}." \
    -- tc qdisc add dev lo parent 1:1 handle 10: pfifo limit 1000
  cap filter-add-u32-ipv4-syn-dport RTM_NEWTFILTER \
    "KERNEL.md's IPv4 'SYN and not ACK to dport 16000' match (pins IHL=5: no hash link / nexthdr). u32 keys are {mask, val, off, offmask} with mask/val in network order; tcm_info = prio<<16 | htons(ETH_P_IP)." \
    -- tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip protocol 6 0xff match u8 0x05 0x0f at 0 match ip dport 16000 0xffff match u8 0x02 0x12 at 33 flowid 1:4
  cap filter-add-u32-ipv6-syn-dport RTM_NEWTFILTER \
    "IPv6 variant, assuming no extension headers: next header at byte 6, dport at 40+2=42, TCP flags at 40+13=53." \
    -- tc filter add dev lo parent 1: protocol ipv6 prio 2 u32 match ip6 protocol 6 0xff match ip6 dport 16000 0xffff match u8 0x02 0x12 at 53 flowid 1:4
  cap filter-add-u32-ipv4-dst-syn-dport RTM_NEWTFILTER \
    "The seed's link-local address mode: the SYN match plus 'match ip dst 169.254.255.254/32' (key at offset 16)." \
    -- tc filter add dev lo parent 1: protocol ip prio 4 u32 match ip dst 169.254.255.254/32 match ip protocol 6 0xff match u8 0x05 0x0f at 0 match ip dport 16000 0xffff match u8 0x02 0x12 at 33 flowid 1:4
  cap filter-add-u32-ipv4-src RTM_NEWTFILTER \
    "A single source-address key (offset 12)." \
    -- tc filter add dev lo parent 1: protocol ip prio 5 u32 match ip src 10.1.2.3/32 flowid 1:4
  cap filter-add-fw RTM_NEWTFILTER \
    "cls_fw keyed on fwmark 1 (filter handle 1); TCA_OPTIONS holds only TCA_FW_CLASSID." \
    -- tc filter add dev lo parent 1: protocol ip prio 3 handle 1 fw flowid 1:4

  # --- dumps: request bytes (and whatever this kernel answers) --------------------------------
  cap qdisc-show-dev-lo RTM_GETQDISC \
    "Dump request. tc sets tcm_ifindex but the qdisc dump returns every device's qdiscs unless strict checking is on; filter by ifindex yourself." \
    -- tc qdisc show dev lo
  cap qdisc-show-stats-dev-lo-prio RTM_GETQDISC \
    "Stats dump with the seed's topology in place (where the kernel accepted it): plug has no dump op, so its entry carries TCA_KIND and TCA_STATS/TCA_STATS2 but no TCA_OPTIONS." \
    -- tc -s qdisc show dev lo
  cap filter-show-stats-dev-lo-parent-1 RTM_GETTFILTER \
    "Filter dump request for parent 1:; where the u32 filters exist the reply shows how the kernel renders them (hash tables, TCA_U32_SEL, TCA_U32_PCNT with -s)." \
    -- tc -s filter show dev lo parent 1:

  cap filter-del-prio1 RTM_DELTFILTER \
    "Delete every filter at prio 1 under 1: (no handle, no kind, no protocol given)." \
    -- tc filter del dev lo parent 1: prio 1
  cap qdisc-del-root RTM_DELQDISC \
    "Delete the root qdisc of lo (where accepted: the prio tree with its plug child, dropping what the plug holds)." \
    -- tc qdisc del dev lo root

  # --- ingress / clsact on lo ------------------------------------------------------------------
  cap qdisc-add-ingress RTM_NEWQDISC \
    "ingress: parent TC_H_INGRESS (0xfffffff1), handle ffff:0, no TCA_OPTIONS." \
    -- tc qdisc add dev lo ingress
  cap qdisc-del-ingress RTM_DELQDISC \
    "Remove ingress again so clsact (same ffff: handle) can be added." \
    -- tc qdisc del dev lo ingress
  cap qdisc-add-clsact RTM_NEWQDISC \
    "clsact: parent TC_H_CLSACT (== TC_H_INGRESS, 0xfffffff1), handle ffff:0, no TCA_OPTIONS." \
    -- tc qdisc add dev lo clsact
  cap qdisc-show-stats-dev-lo-clsact RTM_GETQDISC \
    "Stats dump of lo with clsact in place: a real kernel reply with TCA_STATS2 (and TCA_STATS) for noqueue/clsact." \
    -- tc -s qdisc show dev lo
  cap qdisc-del-clsact RTM_DELQDISC \
    "Remove clsact from lo." \
    -- tc qdisc del dev lo clsact

  # --- a pfifo root that has seen traffic, for a stats reply with non-zero counters ----------
  cap qdisc-add-pfifo-root RTM_NEWQDISC \
    "pfifo as lo's root (accepted on every kernel): struct tc_fifo_qopt {limit=1000}." \
    -- tc qdisc add dev lo root handle 1: pfifo limit 1000
  # A refused TCP connect to 127.0.0.1:9 sends a SYN and a RST through lo's root qdisc.
  ns bash -c 'exec 3<>/dev/tcp/127.0.0.1/9' 2>/dev/null || true   # refused, as intended
  ns bash -c 'exec 3<>/dev/tcp/127.0.0.1/9' 2>/dev/null || true
  cap qdisc-show-stats-dev-lo-pfifo RTM_GETQDISC \
    "Stats dump after 2 refused connects on lo (4 packets through pfifo 1:): TCA_STATS2 with non-zero TCA_STATS_BASIC." \
    -- tc -s qdisc show dev lo
  run tc qdisc del dev lo root

  # --- clsact ingress on a veth, u32 + mirred redirect to an ifb ------------------------------
  # Created in a fixed order so ifindexes are deterministic; each fixture records them.
  run ip link add eth0 type veth peer name eth1
  run ip link add ifb0 type ifb
  run ip link set eth0 up
  run ip link set eth1 up
  run ip link set ifb0 up
  cap qdisc-add-clsact-eth0 RTM_NEWQDISC \
    "clsact on the veth eth0 (ifindex recorded in 'ifindex')." \
    -- tc qdisc add dev eth0 clsact
  cap filter-add-u32-mirred-ifb RTM_NEWTFILTER \
    "The SYN match on clsact ingress (parent 0xfffffff2 = TC_H_MIN_INGRESS) with action mirred egress redirect to ifb0: TCA_U32_ACT nests action 1 {TCA_ACT_KIND 'mirred', TCA_ACT_OPTIONS {TCA_MIRRED_PARMS struct tc_mirred {index, capab, action=TC_ACT_STOLEN(4), refcnt, bindcnt, eaction=TCA_EGRESS_REDIR(1), ifindex}}}." \
    -- tc filter add dev eth0 ingress protocol ip prio 1 u32 match ip protocol 6 0xff match u8 0x05 0x0f at 0 match ip dport 16000 0xffff match u8 0x02 0x12 at 33 action mirred egress redirect dev ifb0
  cap filter-show-stats-dev-eth0-ingress RTM_GETTFILTER \
    "Stats dump of the clsact ingress filters: the kernel's rendering of u32 (a hash-table entry 800: plus the key node) and of the mirred action with its stats." \
    -- tc -s filter show dev eth0 ingress

  # --- links ------------------------------------------------------------------------------------
  cap link-add-ifb RTM_NEWLINK \
    "Create an ifb: IFLA_IFNAME + IFLA_LINKINFO{IFLA_INFO_KIND 'ifb'}. ip first probes with an empty RTM_NEWLINK (seq 0)." \
    -- ip link add synhold0 type ifb
  cap link-del-ifb RTM_DELLINK \
    "ip resolves the name with RTM_GETLINK on a second socket, then deletes by ifi_index (no IFLA_IFNAME)." \
    -- ip link del synhold0

  ip netns del "$NS"
}

# ---------------------------------------------------------------------------------------------
# User-Mode Linux: same commands on a kernel that has sch_plug, sch_prio and cls_fw.
uml_init_script() {
  local dir=$1 result=$2 moddir=$3
  cat <<EOF
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
for m in net/sched/sch_plug net/sched/sch_prio net/sched/sch_ingress net/sched/cls_u32 net/sched/cls_fw \\
         net/sched/act_mirred drivers/net/ifb drivers/net/veth; do
  insmod $moddir/kernel/\$m.ko 2>/dev/null || true
done
ip link set lo up
if OUT="$dir" bash "$SELF" --inside-uml "$dir" >"$dir/log" 2>&1; then echo ok >"$result"; else echo "failed \$?" >"$result"; fi
halt -f
EOF
}

run_uml() {
  local ver umldir="$TMP/uml" result="$TMP/uml-result"
  ver=$(ls "$UML_MODULES" | head -n1)
  mkdir -p "$umldir" "$TMP/uml-dir"
  uml_init_script "$umldir" "$result" "$UML_MODULES/$ver" >"$TMP/uml-init.sh"
  chmod +x "$TMP/uml-init.sh"
  echo "== User-Mode Linux $ver"
  # uml_dir keeps UML's mconsole/pid directory inside $TMP (else it is left in ~/.uml on a panic).
  timeout 600 linux.uml mem=1G rootfstype=hostfs rw init="$TMP/uml-init.sh" con=null con0=fd:0,fd:1 \
    umid="$NS" uml_dir="$TMP/uml-dir" \
    </dev/null >"$TMP/uml-console.log" 2>&1 || true
  if [ "$(cat "$result" 2>/dev/null)" != ok ]; then
    # Seen on hosts whose CPU has AMX: UML 6.1 panics starting init with
    # "userspace - ptrace set fp regs failed, errno = 14". The host fixtures stay valid.
    {
      echo "capture-fixtures: WARNING: the User-Mode Linux run failed ($(cat "$result" 2>/dev/null || echo 'init never reported'));"
      echo "capture-fixtures: WARNING: fixtures hold this kernel's replies only (no \"uml\" block). Console tail:"
      if [ -s "$umldir/log" ]; then tail -n 20 "$umldir/log"; else grep -E 'failed|panic|Run ' "$TMP/uml-console.log" | head -n 5; fi
    } >&2
    return 0
  fi
  cat "$umldir/log"
  node "$TMP/merge.mjs" "$OUT" "$umldir"
}

if [ "$MODE" = uml ]; then
  capture_all
  exit 0
fi

echo "== $KERNEL, $IPROUTE2 -> $OUT"
rm -f "$OUT"/*.json
capture_all
if [ "$UML" = auto ] && command -v linux.uml >/dev/null && [ -d "$UML_MODULES" ]; then
  run_uml
elif [ "$UML" = auto ]; then
  echo "capture-fixtures: linux.uml not installed; fixtures hold this kernel's replies only" >&2
fi
