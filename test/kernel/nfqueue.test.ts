/**
 * NFQUEUE holding on the real kernel, each test in a fresh network namespace:
 * a TCP server and its clients run inside it (`ip netns exec`), the iptables
 * rule is installed there with the system's own iptables, and the outcome is
 * checked with oracles independent of synhold's decoder: the clients' own
 * connect times, the rule's packet counter (`iptables -L -v`), the kernel's
 * queue line (/proc/net/netfilter/nfnetlink_queue) and TCP counters (/proc/net/snmp).
 *
 * Run: cd /work/main && npx tsc -p . && node --test dist/test/kernel/nfqueue.test.js
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import {
  NfQueue,
  NF_INET_PRE_ROUTING,
  NFQNL_TYPE_CONFIG,
  NFQNL_TYPE_PACKET,
  NFQNL_TYPE_VERDICT,
  NFQNL_TYPE_VERDICT_BATCH,
  decodePacket,
  encodeConfig,
  encodeVerdict,
  type NfqPacket,
} from '../../src/nfqueue/nfnetlink_queue.js';
import { parseNfqueueProc } from '../../src/nfqueue/proc.js';
import { NetlinkError } from '../../src/netlink/errors.js';
import { nfqueueRule } from '../../src/netfilter/rules.js';
import { TCP_SYN } from '../../src/nfqueue/packet.js';

const PORT = 18080;
const OTHER_PORT = 18081;
const QUEUE = 7;

const now = (): number => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------------------
// Children inside the namespace
// ---------------------------------------------------------------------------

/** An echo server on 127.0.0.1 for each port given; prints "ready" when all listen. */
const SERVER_JS = `
const net = require('net');
const ports = process.argv.slice(1).map(Number);
let n = 0;
for (const p of ports) {
  net.createServer((s) => { s.on('data', (d) => s.write(d)); s.on('error', () => {}); })
    .listen({ port: p, host: '127.0.0.1', backlog: 1024 }, () => { if (++n === ports.length) console.log('ready'); });
}`;

/**
 * A client: connects to 127.0.0.1:port and prints one JSON line with the epoch
 * times (sub-ms, same clock as the test) of the attempt and the connect. In
 * "echo" mode it stays connected and times a ping-pong for each line on stdin.
 */
const CLIENT_JS = `
const net = require('net');
const [mode, port] = process.argv.slice(1);
const now = () => performance.timeOrigin + performance.now();
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const giveUp = setTimeout(() => { out({ ok: false, error: 'client-timeout' }); process.exit(0); }, 20000);
const startedAt = now();
const s = net.connect({ host: '127.0.0.1', port: Number(port) });
s.on('error', (e) => { out({ ok: false, error: e.code, ms: now() - startedAt }); process.exit(0); });
s.on('connect', () => {
  const connectedAt = now();
  out({ event: 'connected', ok: true, startedAt, connectedAt, ms: connectedAt - startedAt });
  if (mode === 'connect') { clearTimeout(giveUp); s.destroy(); return; }
  process.stdin.on('data', () => {
    const t = now();
    s.once('data', () => out({ event: 'echo', rttMs: now() - t }));
    s.write('ping');
  });
  process.stdin.on('end', () => { clearTimeout(giveUp); s.destroy(); });
});`;

/** Load: `concurrency` loops of connect, close, pause `pauseMs`, for `durationMs`; prints one JSON summary. */
const LOAD_JS = `
const net = require('net');
const [port, durationMs, concurrency, pauseMs] = process.argv.slice(1).map(Number);
const now = () => performance.timeOrigin + performance.now();
const end = now() + durationMs;
const times = []; const errors = {};
let running = concurrency;
function loop() {
  if (now() > end) { if (--running === 0) done(); return; }
  const t = now();
  const s = net.connect({ host: '127.0.0.1', port });
  s.on('connect', () => { times.push(now() - t); s.end(); setTimeout(loop, pauseMs); });
  s.on('error', (e) => { errors[e.code] = (errors[e.code] || 0) + 1; setTimeout(loop, pauseMs); });
}
function done() {
  times.sort((a, b) => a - b);
  const q = (f) => times[Math.min(times.length - 1, Math.floor(f * times.length))] || 0;
  console.log(JSON.stringify({ event: 'load', ok: true, n: times.length, errors, p50: q(0.5), p99: q(0.99), max: q(1), over900: times.filter((x) => x >= 900).length }));
}
for (let i = 0; i < concurrency; i++) loop();`;

interface Line {
  event?: string;
  ok?: boolean;
  error?: string;
  startedAt?: number;
  connectedAt?: number;
  ms?: number;
  rttMs?: number;
  [k: string]: unknown;
}

/** A child process whose stdout is JSON lines (or plain words), killed by PID at the end. */
class Child {
  readonly proc: ChildProcess;
  readonly lines: Line[] = [];
  readonly words: string[] = [];
  stderr = '';
  exited = false;

  constructor(cmd: string, args: string[]) {
    this.proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let buf = '';
    this.proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const l = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!l) continue;
        if (l.startsWith('{')) this.lines.push(JSON.parse(l) as Line);
        else this.words.push(l);
      }
    });
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.proc.on('exit', () => (this.exited = true));
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** Polls (bounded) until pred holds; throws with the child's stderr on timeout. */
  async waitFor<T>(what: string, pred: () => T | undefined | false, timeoutMs = 5000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = pred();
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; stderr: ${this.stderr}`);
      await sleep(2);
    }
  }

  line(pred: (l: Line) => boolean): Line | undefined {
    return this.lines.find(pred);
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.exited) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      /* already gone */
    }
  }
}

/** Everything a test starts, killed by PID however the test ends. */
class Procs {
  private readonly all: Child[] = [];
  start(cmd: string, args: string[]): Child {
    const c = new Child(cmd, args);
    this.all.push(c);
    return c;
  }
  killAll(): void {
    for (const c of this.all) c.kill();
  }
}

async function withLab(fn: (ns: TestNetns, procs: Procs) => Promise<void>): Promise<void> {
  await withNetns(async (ns) => {
    const procs = new Procs();
    try {
      await fn(ns, procs);
    } finally {
      procs.killAll();
    }
  });
}

async function startServer(ns: TestNetns, procs: Procs, ports = [PORT, OTHER_PORT]): Promise<Child> {
  const s = procs.start('ip', ['netns', 'exec', ns.name, 'node', '-e', SERVER_JS, ...ports.map(String)]);
  await s.waitFor('the server', () => s.words.includes('ready'), 10000);
  return s;
}

function startClient(ns: TestNetns, procs: Procs, port = PORT, mode: 'connect' | 'echo' = 'connect'): Child {
  return procs.start('ip', ['netns', 'exec', ns.name, 'node', '-e', CLIENT_JS, mode, String(port)]);
}

function connected(c: Child, timeoutMs = 5000): Promise<Line> {
  return c.waitFor('the client', () => c.line((l) => l.ok !== undefined), timeoutMs);
}

/** The rule under test, installed with the system's iptables inside the namespace. */
function installRule(ns: TestNetns): void {
  const r = nfqueueRule({ port: PORT, queue: QUEUE, family: 4 });
  ns.exec('iptables', ['-w', '5', '-t', r.table, '-I', r.chain, '1', ...r.spec]);
}

/** Oracle: packets the NFQUEUE rule matched (`iptables -t raw -L PREROUTING -v -x -n`). */
function rulePackets(ns: TestNetns): number {
  const out = ns.exec('iptables', ['-w', '5', '-t', 'raw', '-L', 'PREROUTING', '-v', '-x', '-n']);
  const row = out.split('\n').find((l) => l.includes('NFQUEUE'));
  assert.ok(row, out);
  return Number(row.trim().split(/\s+/)[0]);
}

/** Oracle: this queue's line in /proc/net/netfilter/nfnetlink_queue, read inside the namespace. */
function procQueue(ns: TestNetns, queue = QUEUE): { portId: number; total: number; dropped: number; userDropped: number; idSeq: number } | undefined {
  const text = ns.exec('cat', ['/proc/net/netfilter/nfnetlink_queue']);
  for (const l of text.split('\n')) {
    const f = l.trim().split(/\s+/).map(Number);
    if (f.length >= 9 && f[0] === queue) return { portId: f[1]!, total: f[2]!, dropped: f[5]!, userDropped: f[6]!, idSeq: f[7]! };
  }
  return undefined;
}

/** Oracle: a counter from /proc/net/snmp (Tcp: ...) or /proc/net/netstat (TcpExt: ...), inside the namespace. */
function netCounter(ns: TestNetns, file: 'snmp' | 'netstat', group: string, name: string): number {
  const lines = ns
    .exec('cat', [`/proc/net/${file}`])
    .split('\n')
    .filter((l) => l.startsWith(`${group}:`));
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const keys = lines[i]!.split(/\s+/);
    const vals = lines[i + 1]!.split(/\s+/);
    const k = keys.indexOf(name);
    if (k > 0) return Number(vals[k]);
  }
  throw new Error(`no ${group} ${name} in /proc/net/${file}`);
}

const outRsts = (ns: TestNetns): number => netCounter(ns, 'snmp', 'Tcp', 'OutRsts');

/** Every Tcp and TcpExt counter in the namespace, so an unexpected RST can be traced to the path that sent it. */
function tcpCounters(ns: TestNetns): Map<string, number> {
  const m = new Map<string, number>();
  for (const file of ['snmp', 'netstat']) {
    const lines = ns.exec('cat', [`/proc/net/${file}`]).split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const keys = lines[i]!.split(/\s+/);
      const vals = lines[i + 1]!.split(/\s+/);
      if (keys[0] !== 'Tcp:' && keys[0] !== 'TcpExt:') continue;
      keys.slice(1).forEach((k, j) => m.set(`${keys[0]}${k}`, Number(vals[j + 1])));
    }
  }
  return m;
}

/** The counters that moved between two snapshots, as "name +n" words. */
function countersMoved(before: Map<string, number>, after: Map<string, number>): string {
  const moved = [...after].filter(([k, v]) => v !== before.get(k)).map(([k, v]) => `${k} +${v - (before.get(k) ?? 0)}`);
  return moved.join(', ') || 'none';
}

/** Does this kernel have the NFQUEUE target? Asked of iptables itself, in a throwaway namespace. */
function kernelHasNfqueue(): { ok: boolean; why: string } {
  const r = spawnSync(
    'unshare',
    ['--net', 'iptables', '-w', '5', '-t', 'raw', '-A', 'PREROUTING', '-p', 'tcp', '-j', 'NFQUEUE', '--queue-num', '1', '--queue-bypass'],
    { encoding: 'utf8' },
  );
  return { ok: r.status === 0, why: r.stderr };
}

const NFQ = kernelHasNfqueue();
const skip = NFQ.ok ? false : `this kernel/iptables cannot install an NFQUEUE rule (${NFQ.why.trim()}); run the kernel lab instead`;
if (skip) console.error(`nfqueue.test: SKIPPING EVERYTHING: ${skip}`);

// ---------------------------------------------------------------------------

test('no queue bound: --queue-bypass lets the SYN through at once, and the rule did see it', { skip }, async () => {
  await withLab(async (ns, procs) => {
    await startServer(ns, procs);
    installRule(ns);
    assert.equal(procQueue(ns), undefined, 'nothing bound');
    const c = await connected(startClient(ns, procs));
    assert.equal(c.ok, true, JSON.stringify(c));
    assert.ok(c.ms! < 50, `connect took ${c.ms} ms`);
    assert.equal(rulePackets(ns), 1, 'the SYN crossed the rule (bypassed, not skipped)');
  });
});

test('held while bound: pending >= 300 ms, connects within 50 ms of acceptAll, no RST; counters agree', { skip }, async (t) => {
  await withLab(async (ns, procs) => {
    await startServer(ns, procs);
    installRule(ns);
    const packets: NfqPacket[] = [];
    const q = await NfQueue.bind({ queue: QUEUE, netns: ns.name, onPacket: (p) => packets.push(p) });
    try {
      const k0 = procQueue(ns);
      assert.ok(k0, 'the queue is in /proc');
      assert.equal(k0.portId, q.portId, 'bound by our socket');
      const rst0 = outRsts(ns);
      const counters0 = tcpCounters(ns);

      // Echo mode: still connected when the RSTs are counted (the connect path, not the close).
      const c = startClient(ns, procs, PORT, 'echo');
      await c.waitFor('the SYN to be held', () => q.held() === 1, 5000);
      const heldAt = now();
      await sleep(300);
      assert.equal(c.lines.length, 0, 'the client is still waiting');
      assert.equal(procQueue(ns)?.total, 1, 'the kernel holds one packet');

      const acceptAt = now();
      const { accepted } = await q.acceptAll();
      const acceptDone = now();
      const r = await connected(c);
      assert.equal(accepted, 1);
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.ok(r.connectedAt! - heldAt >= 300, `pending ${r.connectedAt! - heldAt} ms`);
      assert.ok(r.connectedAt! - acceptAt < 50, `connected ${r.connectedAt! - acceptAt} ms after acceptAll`);
      t.diagnostic(
        `connect total ${r.ms!.toFixed(1)} ms; acceptAll() took ${(acceptDone - acceptAt).toFixed(2)} ms; connected ${(r.connectedAt! - acceptAt).toFixed(2)} ms after acceptAll started`,
      );

      // What the kernel told us about the packet: a local SYN, seen at PRE_ROUTING on lo.
      assert.equal(packets.length, 1);
      const p = packets[0]!;
      assert.equal(p.hook, NF_INET_PRE_ROUTING, 'loopback SYNs are queued from PREROUTING');
      assert.equal(p.hwProtocol, 0x0800);
      assert.equal(p.headers?.dport, PORT);
      assert.equal(p.headers?.dst, '127.0.0.1');
      assert.equal((p.headers?.tcpFlags ?? 0) & 0x17, TCP_SYN);
      assert.equal(p.indev, 1, 'arrived on lo (ifindex 1)');

      const k1 = procQueue(ns)!;
      assert.deepEqual(
        { total: k1.total, dropped: k1.dropped, userDropped: k1.userDropped, idSeq: k1.idSeq },
        { total: 0, dropped: 0, userDropped: 0, idSeq: 1 },
      );
      assert.equal(outRsts(ns) - rst0, 0, `no RST sent (counters moved: ${countersMoved(counters0, tcpCounters(ns))})`);
      c.proc.stdin!.end();
      assert.equal(rulePackets(ns), 1, 'one SYN, matched once (PREROUTING only)');
      assert.deepEqual((await q.kernelStats())?.idSequence, 1, "synhold's own /proc reader agrees");
    } finally {
      await q.unbind();
      q.close();
    }
    assert.equal(procQueue(ns), undefined, 'unbound');
  });
});

test('a hold longer than the SYN RTO: the client retransmits into the queue; all copies go with one verdict', { skip }, async (t) => {
  await withLab(async (ns, procs) => {
    await startServer(ns, procs);
    installRule(ns);
    const arrivals: number[] = [];
    const q = await NfQueue.bind({ queue: QUEUE, netns: ns.name, onPacket: () => arrivals.push(now()) });
    try {
      const spurious0 = netCounter(ns, 'netstat', 'TcpExt', 'TCPSpuriousRtxHostQueues');
      const rst0 = outRsts(ns);
      const counters0 = tcpCounters(ns);
      // Echo mode: still connected when the RSTs are counted (the connect path, not the close).
      const c = startClient(ns, procs, PORT, 'echo');
      await c.waitFor('the SYN to be held', () => q.held() === 1, 5000);
      await sleep(1600);
      // Queued at PREROUTING the SYN is no longer the socket's skb, so the 1 s
      // retransmission is sent, and queued as well.
      assert.equal(q.held(), 2, 'the SYN and its 1 s retransmission are both held');
      const gap = arrivals[1]! - arrivals[0]!;
      assert.ok(gap > 900 && gap < 1300, `retransmitted ${gap.toFixed(0)} ms after the SYN`);
      assert.equal(netCounter(ns, 'netstat', 'TcpExt', 'TCPSpuriousRtxHostQueues') - spurious0, 0, 'no retransmission was skipped');
      const acceptAt = now();
      assert.deepEqual(await q.acceptAll(), { accepted: 2 });
      const r = await connected(c);
      assert.equal(r.ok, true);
      assert.ok(r.connectedAt! - acceptAt < 50, `connected ${r.connectedAt! - acceptAt} ms after acceptAll`);
      assert.equal(outRsts(ns) - rst0, 0, `no RST for the duplicate SYN (counters moved: ${countersMoved(counters0, tcpCounters(ns))})`);
      c.proc.stdin!.end();
      t.diagnostic(
        `held 1.6 s: SYNs queued at +0 and +${gap.toFixed(0)} ms; connect total ${r.ms!.toFixed(0)} ms, ${(r.connectedAt! - acceptAt).toFixed(1)} ms after acceptAll`,
      );
    } finally {
      await q.unbind();
      q.close();
    }
  });
});

test('for contrast, queued at raw OUTPUT a local SYN keeps its socket: the kernel skips its retransmissions', { skip }, async (t) => {
  await withLab(async (ns, procs) => {
    await startServer(ns, procs);
    const r = nfqueueRule({ port: PORT, queue: QUEUE, family: 4 });
    ns.exec('iptables', ['-w', '5', '-t', 'raw', '-I', 'OUTPUT', '1', ...r.spec]);
    const hooks: number[] = [];
    const q = await NfQueue.bind({ queue: QUEUE, netns: ns.name, onPacket: (p) => hooks.push(p.hook) });
    try {
      const spurious0 = netCounter(ns, 'netstat', 'TcpExt', 'TCPSpuriousRtxHostQueues');
      const c = startClient(ns, procs);
      await c.waitFor('the SYN to be held', () => q.held() === 1, 5000);
      await sleep(1600);
      const spurious = netCounter(ns, 'netstat', 'TcpExt', 'TCPSpuriousRtxHostQueues') - spurious0;
      assert.deepEqual(hooks, [3], 'one SYN, queued from NF_INET_LOCAL_OUT');
      assert.ok(spurious >= 1, `TCPSpuriousRtxHostQueues +${spurious}`);
      await q.acceptAll();
      assert.equal((await connected(c)).ok, true);
      t.diagnostic(`raw OUTPUT: 1 SYN held for 1.6 s, TCPSpuriousRtxHostQueues +${spurious}`);
    } finally {
      await q.unbind();
      q.close();
    }
  });
});

test('while holding: another port and an established connection are not delayed', { skip }, async (t) => {
  await withLab(async (ns, procs) => {
    await startServer(ns, procs);
    installRule(ns);
    // Established before the hold, on the held port.
    const est = startClient(ns, procs, PORT, 'echo');
    assert.equal((await connected(est)).ok, true);

    const q = await NfQueue.bind({ queue: QUEUE, netns: ns.name });
    try {
      const held = startClient(ns, procs);
      await held.waitFor('the SYN to be held', () => q.held() === 1, 5000);

      const other = await connected(startClient(ns, procs, OTHER_PORT));
      assert.equal(other.ok, true);
      assert.ok(other.ms! < 50, `other port: connect took ${other.ms} ms`);

      est.proc.stdin!.write('go\n');
      const echo = await est.waitFor('the echo', () => est.line((l) => l.event === 'echo'));
      assert.ok(echo.rttMs! < 50, `established: echo took ${echo.rttMs} ms`);
      assert.equal(q.held(), 1, 'only the new SYN to the held port was queued');
      t.diagnostic(`other port connect ${other.ms!.toFixed(2)} ms, established echo ${echo.rttMs!.toFixed(2)} ms while holding`);
      await q.acceptAll();
      assert.equal((await connected(held)).ok, true);
      est.proc.stdin!.end();
    } finally {
      await q.unbind();
      q.close();
    }
  });
});

test('release is lossless: SYNs arriving while acceptAll runs are neither dropped nor left behind', { skip }, async (t) => {
  await withLab(async (ns, procs) => {
    await startServer(ns, procs);
    installRule(ns);
    const clientsHeld = new Set<number>();
    const q = await NfQueue.bind({ queue: QUEUE, netns: ns.name, onPacket: (p) => clientsHeld.add(p.headers!.sport!) });
    const N = 40;
    try {
      const rst0 = outRsts(ns);
      const first = Array.from({ length: N }, () => startClient(ns, procs));
      // Distinct source ports: a client held over 1 s adds a retransmitted SYN.
      await first[0]!.waitFor(`${N} clients held`, () => clientsHeld.size === N, 15000);
      // A second wave is starting (node takes tens of ms to start) while we release.
      const second = Array.from({ length: N }, () => startClient(ns, procs));
      await sleep(60);
      const acceptAt = now();
      const { accepted } = await q.acceptAll();
      // Nothing may be left in the queue: unbind would drop it, uncounted.
      const k = procQueue(ns)!;
      const rtx0 = netCounter(ns, 'snmp', 'Tcp', 'RetransSegs');
      const results = await Promise.all([...first, ...second].map((c) => connected(c, 10000)));
      const failed = results.filter((r) => !r.ok);
      // On loopback the kernel answers a released SYN within microseconds, so after the
      // release no client has a reason to retransmit - unless its SYN was lost.
      const rtxAfter = netCounter(ns, 'snmp', 'Tcp', 'RetransSegs') - rtx0;
      // Timing, loosely (80 node processes load the machine): a lost SYN waits up to 1 s.
      const slow = results.filter((r) => r.ok && r.connectedAt! - Math.max(acceptAt, r.startedAt!) >= 1000);
      const held = results.filter((r) => r.startedAt! < acceptAt).length;
      const worst = Math.max(...results.map((r) => r.connectedAt! - Math.max(acceptAt, r.startedAt!)));
      t.diagnostic(
        `${held} clients started before the release (${accepted} SYNs accepted, retransmissions included), ${2 * N - held} after; retransmissions after the release ${rtxAfter}; slowest connect reported ${worst.toFixed(1)} ms after max(release, start); kernel queue_total ${k.total} queue_dropped ${k.dropped} user_dropped ${k.userDropped}`,
      );
      assert.equal(failed.length, 0, JSON.stringify(failed));
      assert.ok(accepted >= N, `accepted ${accepted}`);
      assert.equal(rtxAfter, 0, 'no client retransmitted after the release: no SYN was lost');
      assert.equal(slow.length, 0, `no SYN was dropped (a drop costs a retransmission): ${JSON.stringify(slow)}`);
      assert.equal(k.dropped + k.userDropped, 0);
      assert.equal(k.total, 0, 'nothing left in the queue');
      // Reported, not asserted: the namespace's OutRsts counter. It counts every
      // RST, those sent on closes and those answering stray segments too. CI once
      // saw 2 in a run where every client connected, none retransmitted after the
      // release and nothing was dropped; reruns here show 0. Where they came from
      // is not known (held clients' retransmitted SYNs are queued and released
      // too, 13-27 per run, a candidate). A reset a client met fails it above.
      t.diagnostic(`RSTs sent in the namespace: ${outRsts(ns) - rst0} (SYNs released beyond one per held client: ${accepted - held})`);
      assert.equal(q.holding, false, 'after acceptAll the queue passes packets');
    } finally {
      await q.unbind();
      q.close();
    }
  });
});

test('hold/release cycles under continuous connects: no failure, no retransmission, nothing dropped', { skip }, async (t) => {
  await withLab(async (ns, procs) => {
    await startServer(ns, procs);
    installRule(ns);
    const q = await NfQueue.bind({ queue: QUEUE, netns: ns.name, hold: false });
    try {
      const rtx0 = netCounter(ns, 'snmp', 'Tcp', 'RetransSegs');
      const rst0 = outRsts(ns);
      const load = procs.start('ip', ['netns', 'exec', ns.name, 'node', '-e', LOAD_JS, String(PORT), '3500', '10', '5']);
      await sleep(300);
      const cycles = 10;
      let accepted = 0;
      const releaseMs: number[] = [];
      for (let i = 0; i < cycles; i++) {
        await q.hold();
        await sleep(150);
        const t0 = now();
        accepted += (await q.acceptAll()).accepted;
        releaseMs.push(now() - t0);
        await sleep(100);
      }
      const r = await load.waitFor('the load summary', () => load.line((l) => l.event === 'load'), 15000);
      const k = procQueue(ns)!;
      const rtx = netCounter(ns, 'snmp', 'Tcp', 'RetransSegs') - rtx0;
      const listenDrops = netCounter(ns, 'netstat', 'TcpExt', 'ListenDrops');
      t.diagnostic(`ListenDrops ${listenDrops}, RSTs sent ${outRsts(ns) - rst0}`);
      t.diagnostic(
        `${cycles} holds of 150 ms: ${r.n} connects, errors ${JSON.stringify(r.errors)}, p50 ${(r.p50 as number).toFixed(1)} ms, p99 ${(r.p99 as number).toFixed(1)} ms, max ${(r.max as number).toFixed(1)} ms; ${accepted} SYNs held and accepted; acceptAll max ${Math.max(...releaseMs).toFixed(2)} ms; retransmissions ${rtx}; kernel ${JSON.stringify(k)}`,
      );
      assert.deepEqual(r.errors, {}, 'no connect failed');
      assert.equal(r.over900, 0, 'no connect waited for a retransmission');
      assert.equal(rtx, 0, 'no SYN was lost anywhere (holds are shorter than the 1 s RTO)');
      // A reset connection would show in r.errors (ECONNRESET); the kernel's OutRsts
      // counter also counts RSTs sent when a socket closes with unread data, which a
      // busy machine produces now and then without any client seeing an error, so it
      // is reported above, not asserted.
      assert.equal(k.dropped + k.userDropped, 0);
      assert.ok(accepted >= cycles, `held and released ${accepted} SYNs`);
    } finally {
      await q.unbind();
      q.close();
    }
  });
});

test('overflow: past maxLen the kernel drops the SYN (queue_dropped); that client connects after its retransmit', { skip }, async (t) => {
  await withLab(async (ns, procs) => {
    await startServer(ns, procs);
    installRule(ns);
    const q = await NfQueue.bind({ queue: QUEUE, netns: ns.name, maxLen: 2 });
    try {
      const clients = [startClient(ns, procs), startClient(ns, procs), startClient(ns, procs)];
      await clients[0]!.waitFor('2 held and 1 dropped', () => q.held() === 2 && procQueue(ns)?.dropped === 1, 10000);
      await sleep(200);
      const acceptAt = now();
      assert.deepEqual(await q.acceptAll(), { accepted: 2 });
      const rs = await Promise.all(clients.map((c) => connected(c, 10000)));
      assert.ok(
        rs.every((r) => r.ok),
        JSON.stringify(rs),
      );
      const late = rs.filter((r) => r.connectedAt! - acceptAt > 100);
      assert.equal(late.length, 1, 'exactly one client had to retransmit');
      assert.ok(late[0]!.ms! >= 900, `the dropped one connected after ${late[0]!.ms} ms`);
      t.diagnostic(`connect times ${rs.map((r) => r.ms!.toFixed(0)).join(', ')} ms; kernel ${JSON.stringify(procQueue(ns))}`);
    } finally {
      await q.unbind();
      q.close();
    }
  });
});

/** The holder as its own process, so that it can be killed with SIGKILL. */
function startHolder(ns: TestNetns, procs: Procs): Child {
  const mod = fileURLToPath(new URL('../../src/nfqueue/nfnetlink_queue.js', import.meta.url));
  const js = `
    import { NfQueue } from ${JSON.stringify(mod)};
    const q = await NfQueue.bind({ queue: ${QUEUE}, netns: ${JSON.stringify(ns.name)},
      onPacket: (p) => console.log(JSON.stringify({ event: 'held', id: p.id })) });
    console.log(JSON.stringify({ event: 'bound', portId: q.portId }));`;
  return procs.start(process.execPath, ['--input-type=module', '-e', js]);
}

for (const holdMs of [300, 1500]) {
  test(`kill -9 of the holder after ${holdMs} ms: the held SYN is dropped, the client retransmits and connects through the bypass`, { skip }, async (t) => {
    await withLab(async (ns, procs) => {
      await startServer(ns, procs);
      installRule(ns);
      const holder = startHolder(ns, procs);
      await holder.waitFor('the holder to bind', () => holder.line((l) => l.event === 'bound'), 10000);
      const rst0 = outRsts(ns);
      const counters0 = tcpCounters(ns);
      // Echo mode: the client stays connected until the test ends its stdin, so
      // the RST count below covers the connect path only, not the close.
      const c = startClient(ns, procs, PORT, 'echo');
      await holder.waitFor('the SYN to be held', () => holder.line((l) => l.event === 'held'), 5000);
      const firstHeldAt = now();
      await sleep(holdMs);
      assert.equal(c.lines.length, 0, 'still pending');
      const killAt = now();
      holder.kill('SIGKILL');
      await holder.waitFor('the holder to die', () => holder.exited, 5000);
      const r = await connected(c, 10000);
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(procQueue(ns), undefined, 'the kernel destroyed the queue with the socket');
      const afterKill = r.connectedAt! - killAt;
      const heldSyns = holder.lines.filter((l) => l.event === 'held').length;
      const sinceSyn = r.connectedAt! - firstHeldAt;
      t.diagnostic(
        `kill after ${holdMs} ms hold (${heldSyns} SYNs held): connected ${sinceSyn.toFixed(0)} ms after the first SYN, ${afterKill.toFixed(0)} ms after the kill; rule matched ${rulePackets(ns)} SYNs`,
      );
      assert.equal(outRsts(ns) - rst0, 0, `no RST: the client never saw a refusal (counters moved: ${countersMoved(counters0, tcpCounters(ns))})`);
      c.proc.stdin!.write('ping\n');
      await c.waitFor('the echo', () => c.line((l) => l.event === 'echo'), 5000);
      c.proc.stdin!.end();
      // Every SYN held was dropped with the queue; the next retransmission took the bypass.
      assert.equal(rulePackets(ns), heldSyns + 1, 'the held SYNs plus the one retransmission that got through');
      assert.equal(heldSyns, 1 + Math.floor(holdMs / 1000), 'one retransmission per second while held');
      assert.ok(afterKill > 50 && afterKill < 1100, `connected ${afterKill} ms after the kill: on the next retransmission, not at once`);
      // Retransmissions come every second here (tcp_syn_linear_timeouts=4): the connect lands on the next one.
      const expected = 1000 * (Math.floor(holdMs / 1000) + 1);
      assert.ok(Math.abs(sinceSyn - expected) < 150, `connected ${sinceSyn} ms after the first SYN, expected ~${expected}`);
    });
  });
}

test('close() without unbind drops what is held, like a crash', { skip }, async (t) => {
  await withLab(async (ns, procs) => {
    await startServer(ns, procs);
    installRule(ns);
    const q = await NfQueue.bind({ queue: QUEUE, netns: ns.name });
    const c = startClient(ns, procs);
    await c.waitFor('the SYN to be held', () => q.held() === 1, 5000);
    q.close();
    const r = await connected(c, 10000);
    assert.equal(r.ok, true);
    assert.ok(r.ms! >= 950, `connect took ${r.ms} ms: the held SYN was dropped and retransmitted`);
    t.diagnostic(`close() while holding: client connected after ${r.ms!.toFixed(0)} ms`);
  });
});

test('unbind() accepts what is held, then the bypass takes over', { skip }, async () => {
  await withLab(async (ns, procs) => {
    await startServer(ns, procs);
    installRule(ns);
    const q = await NfQueue.bind({ queue: QUEUE, netns: ns.name });
    try {
      const c = startClient(ns, procs);
      await c.waitFor('the SYN to be held', () => q.held() === 1, 5000);
      const t0 = now();
      await q.unbind();
      const r = await connected(c);
      assert.ok(r.connectedAt! - t0 < 50, 'released by unbind, not retransmitted');
      assert.equal(procQueue(ns), undefined);
      const again = await connected(startClient(ns, procs));
      assert.ok(again.ms! < 50, 'bypassed after unbind');
    } finally {
      q.close();
    }
  });
});

test('hold() after acceptAll holds again; bind with hold:false passes until hold()', { skip }, async () => {
  await withLab(async (ns, procs) => {
    await startServer(ns, procs);
    installRule(ns);
    const q = await NfQueue.bind({ queue: QUEUE, netns: ns.name, hold: false });
    try {
      assert.equal(q.holding, false);
      const passed = await connected(startClient(ns, procs));
      assert.ok(passed.ms! < 50, `pass-through: ${passed.ms} ms`);
      assert.equal(q.stats.received, 0, 'the kernel accepted it itself (fail-open at max length 0)');
      assert.equal(procQueue(ns)?.dropped, 0);

      await q.hold();
      const c = startClient(ns, procs);
      await c.waitFor('the SYN to be held', () => q.held() === 1, 5000);
      await sleep(100);
      assert.equal(c.lines.length, 0);
      await q.acceptAll();
      assert.equal((await connected(c)).ok, true);
    } finally {
      await q.unbind();
      q.close();
    }
  });
});

test('a queue another socket holds: EPERM, with a hint naming the holder', { skip }, async () => {
  await withNetns(async (ns) => {
    const a = await NfQueue.bind({ queue: QUEUE, netns: ns.name, hold: false });
    try {
      await assert.rejects(NfQueue.bind({ queue: QUEUE, netns: ns.name }), (e: unknown) => {
        assert.ok(e instanceof NetlinkError);
        // The kernel says EPERM (as for a missing CAP_NET_ADMIN); the hint, from /proc, says who holds it.
        assert.equal(e.errnoName, 'EPERM');
        assert.match(e.message, new RegExp(`^NFQNL_MSG_CONFIG queue 7 bind: EPERM.* - queue 7 is already bound by another socket \\(peer_portid ${a.portId} `));
        return true;
      });
      // A different queue number is fine.
      const b = await NfQueue.bind({ queue: QUEUE + 1, netns: ns.name, hold: false });
      await b.unbind();
      b.close();
    } finally {
      await a.unbind();
      a.close();
    }
  });
});

test('codec: messages laid out as include/uapi/linux/netfilter/nfnetlink_queue.h says (hand-computed bytes)', () => {
  const hex = (b: Buffer) => b.toString('hex');
  assert.deepEqual(
    [NFQNL_TYPE_PACKET, NFQNL_TYPE_VERDICT, NFQNL_TYPE_CONFIG, NFQNL_TYPE_VERDICT_BATCH],
    [0x300, 0x301, 0x302, 0x303],
    '(NFNL_SUBSYS_QUEUE << 8) | msg',
  );
  const bind = encodeConfig(7, {
    cmd: { command: 1, pad: 0, pf: 0 },
    params: { copyRange: 128, copyMode: 2 },
    queueMaxlen: 1024,
    mask: 1,
    flags: 1,
  });
  assert.equal(
    hex(bind),
    [
      '00000007', // struct nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id = queue 7 (be16)
      '08000100' + '01000000', // NFQA_CFG_CMD: command BIND, pad, pf 0
      '09000200' + '0000008002' + '000000', // NFQA_CFG_PARAMS (packed, 5 bytes): copy_range be32 128, copy_mode PACKET; padded to 4
      '08000300' + '00000400', // NFQA_CFG_QUEUE_MAXLEN be32 1024
      '08000400' + '00000001', // NFQA_CFG_MASK be32 FAIL_OPEN
      '08000500' + '00000001', // NFQA_CFG_FLAGS be32 FAIL_OPEN
    ].join(''),
  );
  // NFQA_VERDICT_HDR { be32 verdict NF_ACCEPT, be32 id 5 }
  assert.equal(hex(encodeVerdict(7, 1, 5)), '00000007' + '0c000200' + '00000001' + '00000005');

  // A packet message as the kernel sends it: nfgenmsg AF_INET, NFQA_PACKET_HDR (7 bytes, packed),
  // NFQA_IFINDEX_INDEV, NFQA_PAYLOAD (an IPv4 TCP SYN 127.0.0.1:40000 -> 127.0.0.1:8080).
  const ip = Buffer.from('4500003c1c4640004006000' + '07f0000017f000001', 'hex');
  const tcp = Buffer.from('9c401f90000000010000000050020000' + '00000000', 'hex');
  const payload = Buffer.concat([ip, tcp]);
  const msg = Buffer.concat([
    Buffer.from('02000007', 'hex'),
    Buffer.from('0b000100' + '0000002a' + '0800' + '00' + '00', 'hex'),
    Buffer.from('08000500' + '00000001', 'hex'),
    Buffer.from('2c000a00', 'hex'),
    payload,
  ]);
  const p = decodePacket(msg);
  assert.equal(p.queue, 7);
  assert.equal(p.id, 42);
  assert.equal(p.hwProtocol, 0x0800);
  assert.equal(p.hook, 0);
  assert.equal(p.indev, 1);
  assert.equal(p.payloadLength, 40);
  assert.equal(p.length, 40);
  assert.deepEqual(p.headers, { family: 4, src: '127.0.0.1', dst: '127.0.0.1', protocol: 6, sport: 40000, dport: 8080, tcpFlags: 0x02 });

  // /proc/net/netfilter/nfnetlink_queue as net/netfilter/nfnetlink_queue.c prints it ("%5u %6u %5u %1u %5u %5u %5u %8u %2d").
  assert.deepEqual(parseNfqueueProc('    7   4406     1 2   128     3     0        9  1\n'), [
    { queue: 7, peerPortId: 4406, queueTotal: 1, copyMode: 2, copyRange: 128, queueDropped: 3, userDropped: 0, idSequence: 9 },
  ]);
});
