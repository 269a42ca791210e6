/**
 * Real peers for the buffer tests, and the kernel's own view of a namespace
 * (independent oracles: /proc/net/netfilter/nfnetlink_queue read with cat,
 * nft -j, iptables-save, nstat), none of it through synhold's code.
 *
 * A "pair" is one process inside the namespace with both ends of one flow: a
 * server and a client connected to it (TCP), or two UDP sockets. The test drives
 * it over stdin with JSON lines ({"send":"c2s"|"s2c","data":BASE64}, {"dump":1})
 * and reads its events on stdout: every receipt with its side, size and time.
 * Times are taken inside the pair (Date.now()), so spawning costs never count.
 * It is killed by PID, and exits by itself after its lifetime.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestNetns } from '../helpers/netns.js';
import { CLI } from '../helpers/cli.js';
import type { BufferHeld } from '../../src/buffer/engine.js';
import type { HeldPacket } from '../../src/buffer/held.js';

const PAIR = `
const net = require('net'), dgram = require('dgram');
const [proto, port, clientPort, lifetime] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const got = { server: [], client: [] };
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const recv = (side) => (d) => { got[side].push(Buffer.from(d)); emit({ ev: 'recv', side, bytes: d.length, at: Date.now() }); };
let send;
if (proto === 'tcp') {
  let srvSock;
  const srv = net.createServer((s) => { srvSock = s; s.setNoDelay(true); s.on('data', recv('server')); s.on('error', () => {}); maybeReady(); });
  let cli;
  const maybeReady = () => { if (srvSock && cli && cli.readyState === 'open') emit({ ev: 'ready', clientPort: cli.localPort }); };
  srv.listen(port, '127.0.0.1', () => {
    cli = net.connect({ host: '127.0.0.1', port, localPort: clientPort || undefined }, () => { cli.setNoDelay(true); maybeReady(); });
    cli.on('data', recv('client'));
    cli.on('error', (e) => emit({ ev: 'error', message: e.message }));
  });
  send = (way, b) => (way === 'c2s' ? cli : srvSock).write(b);
} else {
  const srv = dgram.createSocket('udp4'), cli = dgram.createSocket('udp4');
  srv.on('message', (m, r) => recv('server')(m));
  cli.on('message', recv('client'));
  srv.bind(port, '127.0.0.1', () => cli.bind(clientPort || 0, '127.0.0.1', () => emit({ ev: 'ready', clientPort: cli.address().port })));
  send = (way, b) => (way === 'c2s' ? cli.send(b, port, '127.0.0.1') : srv.send(b, cli.address().port, '127.0.0.1'));
}
require('readline').createInterface({ input: process.stdin }).on('line', (l) => {
  const m = JSON.parse(l);
  if (m.send) send(m.send, Buffer.from(m.data, 'base64'));
  if (m.dump) emit({ ev: 'dump', server: Buffer.concat(got.server).toString('base64'), client: Buffer.concat(got.client).toString('base64') });
});
setTimeout(() => process.exit(0), lifetime).unref();
`;

export interface PairEvent {
  ev: 'ready' | 'recv' | 'dump' | 'error';
  side?: 'server' | 'client';
  bytes?: number;
  at?: number;
  clientPort?: number;
  server?: string;
  client?: string;
  message?: string;
}

export interface Pair {
  child: ChildProcess;
  clientPort: number;
  /** Every receipt so far, in order. */
  readonly received: PairEvent[];
  send(way: 'c2s' | 's2c', data: Buffer): void;
  /** Bytes received so far by one side. */
  total(side: 'server' | 'client'): number;
  /** Everything each side received, in order. */
  dump(): Promise<{ server: Buffer; client: Buffer }>;
  kill(): void;
}

/** Starts a pair on 127.0.0.1:port in the namespace; resolves once both ends are ready (TCP: connected). */
export async function startPair(ns: TestNetns, proto: 'tcp' | 'udp', port: number, opts: { clientPort?: number; lifetimeMs?: number } = {}): Promise<Pair> {
  const args = ['netns', 'exec', ns.name, process.execPath, '-e', PAIR, proto, String(port), String(opts.clientPort ?? 0), String(opts.lifetimeMs ?? 60_000)];
  const child = spawn('ip', args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const received: PairEvent[] = [];
  const waiters: ((e: PairEvent) => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    const e = JSON.parse(l) as PairEvent;
    if (e.ev === 'recv') received.push(e);
    for (const w of waiters.splice(0)) w(e);
  });
  const next = (ev: PairEvent['ev']) =>
    new Promise<PairEvent>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`pair: no ${ev} event in 10 s`)), 10_000);
      const wait = (e: PairEvent) => {
        if (e.ev === ev) {
          clearTimeout(t);
          resolve(e);
        } else waiters.push(wait);
      };
      waiters.push(wait);
    });
  const ready = await next('ready');
  return {
    child,
    clientPort: ready.clientPort!,
    received,
    send: (way, data) => child.stdin!.write(`${JSON.stringify({ send: way, data: data.toString('base64') })}\n`),
    total: (side) => received.filter((e) => e.side === side).reduce((n, e) => n + e.bytes!, 0),
    async dump() {
      const d = next('dump');
      child.stdin!.write(`${JSON.stringify({ dump: 1 })}\n`);
      const e = await d;
      return { server: Buffer.from(e.server!, 'base64'), client: Buffer.from(e.client!, 'base64') };
    },
    kill: () => child.kill('SIGKILL'),
  };
}

/** Polls until fn is truthy; bounded in time and count. */
export async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (let i = 0; i < 100_000; i++) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) break;
    await sleep(5);
  }
  throw new Error(`timed out waiting for ${what}`);
}

export interface ProcQueue {
  queue: number;
  peerPortId: number;
  queueTotal: number;
  queueDropped: number;
  userDropped: number;
  idSequence: number;
}

/** The namespace's /proc/net/netfilter/nfnetlink_queue, read with cat inside it (the kernel's word, not our reader's). */
export function procQueues(ns: TestNetns): ProcQueue[] {
  let text = '';
  try {
    text = ns.exec('cat', ['/proc/net/netfilter/nfnetlink_queue']);
  } catch {
    return []; // the file appears with nfnetlink_queue: nothing bound anywhere yet
  }
  return text
    .split('\n')
    .map((l) => l.trim().split(/\s+/).map(Number))
    .filter((f) => f.length >= 8 && f.every(Number.isFinite))
    .map((f) => ({ queue: f[0]!, peerPortId: f[1]!, queueTotal: f[2]!, queueDropped: f[5]!, userDropped: f[6]!, idSequence: f[7]! }));
}

export function procQueue(ns: TestNetns, queue: number): ProcQueue | undefined {
  return procQueues(ns).find((q) => q.queue === queue);
}

/** The whole netfilter state of the namespace: `nft -j list ruleset` and both iptables-save. */
export function netfilterSnapshot(ns: TestNetns): string {
  const nft = spawnSync('ip', ['netns', 'exec', ns.name, 'nft', '-j', 'list', 'ruleset'], { encoding: 'utf8' });
  // nft -j includes a metainfo header with its version; the ruleset is the rest.
  const rules = (JSON.parse(nft.stdout || '{"nftables":[]}') as { nftables: Record<string, unknown>[] }).nftables.filter((o) => !('metainfo' in o));
  const strip = (s: string) =>
    s
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .join('\n');
  return JSON.stringify({ nft: rules, ipt4: strip(ns.exec('iptables-save', [])), ipt6: strip(ns.exec('ip6tables-nft-save', [])) });
}

export { nstat } from '../helpers/netns.js';

const CONNECT = `
const s = require('net').connect({ host: process.argv[4], port: Number(process.argv[1]), localPort: Number(process.argv[2]) || undefined });
s.on('connect', () => console.log(JSON.stringify({ connectedAt: Date.now() })));
s.on('error', (e) => console.log(JSON.stringify({ error: e.code || e.message })));
setTimeout(() => process.exit(0), Number(process.argv[3])).unref();
`;

export interface Connecting {
  /** Resolves with the epoch ms at which the handshake completed (taken inside the client). */
  connected: Promise<number>;
  kill(): void;
}

/** A TCP client in the namespace connecting to host:port (127.0.0.1 by default), from localPort if given (0: any). */
export function connectFrom(ns: TestNetns, port: number, localPort = 0, lifetimeMs = 30_000, host = '127.0.0.1'): Connecting {
  const args = [String(port), String(localPort), String(lifetimeMs), host];
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', CONNECT, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const connected = new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      const m = JSON.parse(l) as { connectedAt?: number; error?: string };
      if (m.connectedAt) resolve(m.connectedAt);
      else reject(new Error(`connect to ${port} failed: ${m.error}`));
    });
    child.once('exit', () => reject(new Error(`the client for ${port} exited without connecting`)));
  });
  connected.catch(() => undefined);
  return { connected, kill: () => child.kill('SIGKILL') };
}

export interface Owner {
  pid: number;
  /** The first line `synhold --json buffer start` printed: what it holds, its watchdog. */
  started: { queue: number; ownerPid: number; watchdogPid: number; socket: string };
  /** Resolves with the exit status and stderr once the owner exits. */
  done: Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

/** Runs `synhold --netns NS --json buffer start ARGS` in the foreground, as a user would; resolves once it holds. */
export async function startOwner(ns: TestNetns, args: string[]): Promise<Owner> {
  const child = spawn(process.execPath, [CLI, '--netns', ns.name, '--json', 'buffer', 'start', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.once('close', (status, signal) => resolve({ status, signal, stderr })),
  );
  const first = await Promise.race([
    new Promise<string>((resolve) => createInterface({ input: child.stdout! }).once('line', resolve)),
    done.then((d) => {
      throw new Error(`synhold buffer start exited ${d.status ?? d.signal}: ${d.stderr}`);
    }),
  ]);
  return { pid: child.pid!, started: JSON.parse(first) as Owner['started'], done };
}

/** Every non-zero TCP counter of `nstat -az` in the namespace (for failure messages). */
export function nstatAll(ns: TestNetns): Record<string, number> {
  const j = JSON.parse(ns.exec('nstat', ['-az', '--json'])) as { kernel: Record<string, number> };
  return Object.fromEntries(Object.entries(j.kernel).filter(([k, v]) => v !== 0 && /^Tcp/.test(k)));
}

/** The packets an nfqueue buffer lists (a plug buffer only counts: then this fails the test). */
export async function packetsOf(b: { list(): Promise<BufferHeld> }): Promise<HeldPacket[]> {
  const h = await b.list();
  if (!h.packets) throw new Error('this buffer lists no packets (plug backend?)');
  return h.packets;
}

/**
 * To TCP, a hold longer than its timers is a loss: the retransmission timeout
 * (200 ms at least, the minimum on lo, where the RTT is microseconds) marks what
 * is held lost, and a tail loss probe (about two RTTs, and the RTT it measures
 * includes the holds) fires too; either retransmits as soon as the original
 * has left the buffer, if its ACK is not back yet. Tests that count
 * retransmissions give the namespace's 127.0.0.1 route a 3 s RTO minimum (`ip
 * route ... rto_min 3s`, before connecting) and turn tail loss probes off
 * (net.ipv4.tcp_early_retrans=0), so that holding an epoch for under a second
 * arms no timer that can fire. Race reproductions that hold long can do the same.
 */
export function patientTcp(ns: TestNetns): void {
  ns.exec('ip', [
    'route',
    'replace',
    'local',
    '127.0.0.1',
    'dev',
    'lo',
    'table',
    'local',
    'proto',
    'kernel',
    'scope',
    'host',
    'src',
    '127.0.0.1',
    'rto_min',
    '3s',
  ]);
  ns.exec('sysctl', ['-qw', 'net.ipv4.tcp_early_retrans=0']);
}
