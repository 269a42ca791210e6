/**
 * Real TCP peers for kernel tests, run inside a network namespace with
 * `ip netns exec` and killed by PID. Timings are measured inside the peer
 * process, so the cost of spawning it (large in the kernel lab) never counts.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

const SERVER = `
const net = require('net');
const [host, port] = [process.argv[1], Number(process.argv[2])];
const srv = net.createServer((s) => { s.on('data', (d) => s.write(d)); s.on('error', () => {}); });
srv.listen({ host, port, backlog: 1024 }, () => console.log('listening'));
setTimeout(() => process.exit(0), Number(process.argv[3])).unref();
`;

const CLIENT = `
const net = require('net');
const [host, port, pings, gap] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const t0 = process.hrtime.bigint();
const ms = () => Number(process.hrtime.bigint() - t0) / 1e6;
const s = net.connect({ host, port });
const out = { connectMs: null, connectedAt: null, error: null, pingMs: [] };
let done = false;
const finish = () => { if (done) return; done = true; console.log(JSON.stringify(out)); s.destroy(); process.exit(0); };
s.on('connect', () => {
  out.connectMs = ms();
  out.connectedAt = Date.now();
  console.log('connected');
  let n = 0;
  const ping = () => {
    if (n++ >= pings) return finish();
    const p0 = process.hrtime.bigint();
    s.write('x');
    s.once('data', () => { out.pingMs.push(Number(process.hrtime.bigint() - p0) / 1e6); setTimeout(ping, gap); });
  };
  ping();
});
s.on('error', (e) => { out.error = e.code || e.message; finish(); });
setTimeout(() => { out.error = 'TIMEOUT'; finish(); }, 20000).unref();
`;

export interface Peer {
  child: ChildProcess;
  kill(): void;
}

function inNs(netns: string | undefined, argv: string[]): ChildProcess {
  const [cmd, args] = netns ? ['ip', ['netns', 'exec', netns, ...argv]] : [argv[0]!, argv.slice(1)];
  return spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
}

/** An echo server on host:port inside netns; resolves once it listens. Exits by itself after lifetimeMs. */
export async function startEchoServer(netns: string | undefined, host: string, port: number, lifetimeMs = 120_000): Promise<Peer> {
  const child = inNs(netns, [process.execPath, '-e', SERVER, host, String(port), String(lifetimeMs)]);
  const lines = createInterface({ input: child.stdout! });
  const [line] = (await Promise.race([once(lines, 'line'), once(child, 'exit').then(() => ['exited'])])) as string[];
  if (line !== 'listening') throw new Error(`echo server on ${host}:${port} did not start`);
  return { child, kill: () => child.kill('SIGKILL') };
}

export interface ClientResult {
  connectMs: number | null;
  /** Epoch ms at which the handshake completed. */
  connectedAt: number | null;
  error: string | null;
  pingMs: number[];
}

export interface Client {
  /** Resolves when the TCP handshake completed (the client printed 'connected'). */
  connected: Promise<void>;
  result: Promise<ClientResult>;
  kill(): void;
}

/** Connects to host:port from inside netns; after connecting, sends `pings` one-byte echoes `gapMs` apart. */
export function startClient(netns: string | undefined, host: string, port: number, pings = 0, gapMs = 0): Client {
  const child = inNs(netns, [process.execPath, '-e', CLIENT, host, String(port), String(pings), String(gapMs)]);
  const lines = createInterface({ input: child.stdout! });
  let onConnected!: () => void;
  const connected = new Promise<void>((r) => (onConnected = r));
  const result = new Promise<ClientResult>((resolve, reject) => {
    lines.on('line', (l) => {
      if (l === 'connected') onConnected();
      else if (l.startsWith('{')) resolve(JSON.parse(l) as ClientResult);
    });
    child.once('exit', (code) => setTimeout(() => reject(new Error(`client exited ${code} without a result`)), 100));
  });
  result.catch(() => undefined);
  return { connected, result, kill: () => child.kill('SIGKILL') };
}

/**
 * Python: `listen(fam, addr)`, a listener on the script's global `port` as HAProxy binds one
 * (SO_REUSEADDR, SO_REUSEPORT, IPv6 only for AF_INET6), so an old and a new server can both listen.
 * For the test servers that swap or stand beside each other (test/reload/dual-stack, stop-old).
 */
export const PY_REUSEPORT_LISTEN = `def listen(fam, addr):
    s = socket.socket(fam)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    s.listen(128)
    return s`;

// Connects N sockets (each connect() returns once the SYN-ACK is in: the client believes it is
// connected), prints "ready", then keeps them open until stdin closes or 60 s pass.
const HALF_OPEN_CLIENT = `
import socket, sys, select
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = [socket.create_connection((host, port), timeout=5) for _ in range(n)]
print("ready", flush=True)
select.select([sys.stdin], [], [], 60)
`;

/**
 * `n` connections to host:port left mid-handshake on the server's side, inside netns: a table of
 * the test's own drops the bare ACKs sent to the port (the handshake's last packet), so each stays
 * a request socket in SYN_RECV while its client believes it connected (`ss -tn state syn-recv`
 * lists them). A segment with data still completes a handshake. Resolves once all n are made;
 * the returned function closes the clients and deletes the table. Bare ACKs to the port stay
 * dropped until then, for every connection (and until the last such table is deleted).
 */
let halfOpenTables = 0;

export async function halfOpen(netns: string, host: string, port: number, n: number): Promise<() => void> {
  const table = `synhold_test_half_open_${process.pid}_${++halfOpenTables}`;
  const nft = (script: string): void => {
    const r = spawnSync('ip', ['netns', 'exec', netns, 'nft', '-f', '-'], { input: script, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`nft: ${r.stderr.trim()}`);
  };
  nft(`table inet ${table} { chain input { type filter hook input priority -10; tcp dport ${port} tcp flags & (fin|syn|rst|psh|ack) == ack drop; }; }`);
  const child = spawn('ip', ['netns', 'exec', netns, 'python3', '-c', HALF_OPEN_CLIENT, host, String(port), String(n)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const undo = (): void => {
    child.kill('SIGKILL');
    nft(`delete table inet ${table}`);
  };
  const lines = createInterface({ input: child.stdout! });
  const [line] = (await Promise.race([once(lines, 'line'), once(child, 'exit').then(() => ['exited'])])) as string[];
  if (line !== 'ready') {
    undo();
    throw new Error(`half-open clients to ${host}:${port} did not connect`);
  }
  return undo;
}
