/**
 * The seed's reload race, on demand (Yelp, "True Zero Downtime HAProxy Reloads"):
 * with SO_REUSEPORT, a connection that is in the OLD listener's queue when that
 * listener closes is reset. In production the window is a fraction of a
 * millisecond per reload; here `synhold buffer` holds it open as long as we like.
 *
 * How: the old listener never accepts. The client's SYN reaches it and the kernel
 * answers SYN-ACK, so the client's connect() returns; the buffer holds the
 * client's third packet (the handshake ACK, and the request behind it: the
 * filter is "to the port, ACK on, SYN off"). The handshake now waits in the old
 * listener's SYN queue (`ss state syn-recv` shows it). Then the reload: a new
 * listener joins the SO_REUSEPORT group and the old one closes. Then the ACK goes.
 *
 *   race     tcp_migrate_req=0: the ACK finds a request whose listener is gone;
 *            the kernel drops it and looks again, finds the new listener, which
 *            has no such handshake: RST. The client reads ECONNRESET.
 *   protect  the fix the seed describes: `synhold protect` holds new SYNs while
 *            CMD swaps the listeners, so the client's SYN reaches the NEW listener.
 *            Same buffer, same swap, tcp_migrate_req=0 still: the client gets its answer.
 *   migrate  the kernel's own fix, tcp_migrate_req=1 (Linux 5.14+): the same
 *            sequence as `race`; closing the old listener moves the request to the
 *            new one (TcpExtTCPMigrateReqSuccess counts it).
 *
 *   protect-late  what protect does NOT fix: the `race` sequence, with the swap
 *            done by protect's CMD. The SYN reached the old listener before the hold
 *            began, so holding SYNs cannot help: RST again. Only tcp_migrate_req
 *            (which synhold setup turns on by default) saves that handshake.
 *
 * Run (root, after `npm run build`): node dist/examples/races/reload-race.js [RUNS]
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buffer } from '../../src/index.js';
import { counters, grew, nfqueueTotal, nsRun, ssCount, startPeer, until } from './kernel.js';

export const PORT = 18080;
/** protect's queue (synhold setup's default --queue-num); the buffer keeps its own, 7100. */
const PROTECT_QUEUE = 7001;
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'synhold.cjs');
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/**
 * One python3 process (Node 20 cannot set SO_REUSEPORT) with both servers and
 * the client. `swap` (a stdin line, or SIGUSR1 for protect's CMD): start the new
 * listener, then close the old one, as `haproxy -sf` does. `connect`: one client
 * that sends a request and prints what it got, or its errno.
 */
const PEER_PY = `
import errno, json, os, signal, socket, sys, threading
port = int(sys.argv[1])
threading.Timer(30, lambda: os._exit(3)).start()
# One write(2) per line: print() writes the text and its newline apart, so the client thread and the
# swap (a signal handler) could put two objects on one line (seen once in CI: '{"ev": "swapped"}{...').
# A pipe write of under PIPE_BUF bytes is atomic.
def emit(**o): os.write(1, (json.dumps(o) + "\\n").encode())
def listener():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(('127.0.0.1', port))
    s.listen(16)
    return s
def serve(s):
    while True:
        c, _ = s.accept()
        c.recv(64)
        c.sendall(b'hello from the new server')
        c.close()
old = listener()  # never accepts: its process is busy going away
def swap(*_):
    new = listener()
    threading.Thread(target=serve, args=(new,), daemon=True).start()
    old.close()
    emit(ev='swapped')
def client():
    c = socket.socket()
    c.settimeout(5)
    try:
        c.connect(('127.0.0.1', port))
        emit(ev='connected')
        c.sendall(b'GET /\\n')
        got = c.recv(64).decode()
        emit(ev='result', answer=got or None, error=None if got else 'EOF')
    except socket.timeout:
        emit(ev='result', answer=None, error='TIMEOUT')
    except OSError as e:
        emit(ev='result', answer=None, error=errno.errorcode.get(e.errno, str(e)))
signal.signal(signal.SIGUSR1, swap)
emit(ev='listening')
for line in sys.stdin:
    if line.strip() == 'connect': threading.Thread(target=client, daemon=True).start()
    if line.strip() == 'swap': swap()
`;

export type ReloadWay = 'race' | 'protect' | 'protect-late' | 'migrate';

export interface ReloadOutcome {
  way: ReloadWay;
  /** net.ipv4.tcp_migrate_req in the namespace, as sysctl read it back. */
  migrateReq: number;
  /** The client's own view: the answer, or its errno (ECONNRESET). */
  answer: string | null;
  error: string | null;
  /** `ss state syn-recv` on the port just before the old listener closed: handshakes in its queue. */
  synRecvAtSwap: number;
  /** Packets the buffer let go at the end (the ACK and the request: 2). */
  heldAtRelease: number;
  /** Growth of the namespace's counters over the run (/proc/net/snmp, /proc/net/netstat). */
  grew: Record<string, number>;
  /** protect's --json result (protect only). */
  protect?: { exitCode: number; releaseCause?: string; holdMs?: number; released?: number };
}

const COUNTERS = ['TcpOutRsts', 'TcpExtTCPMigrateReqSuccess', 'TcpExtTCPMigrateReqFailure'];

/** One run of the race in `netns` (an empty namespace with lo up); leaves nothing running. */
export async function reloadRace(netns: string, way: ReloadWay): Promise<ReloadOutcome> {
  nsRun(netns, ['sysctl', '-qw', `net.ipv4.tcp_migrate_req=${way === 'migrate' ? 1 : 0}`]);
  const peer = startPeer(netns, [PYTHON, '-c', PEER_PY, String(PORT)]);
  const dir = mkdtempSync(join(tmpdir(), 'synhold-race-'));
  const viaProtect = way === 'protect' || way === 'protect-late';
  let protectRun: ReturnType<typeof cliAsync> | undefined;
  try {
    await peer.next('listening');
    if (viaProtect) {
      // nfqueue (this kernel has no sch_plug); migrate-req off, or the kernel's fix would hide whether protect's works.
      cli(netns, ['setup', '--port', String(PORT), '--backend', 'nfqueue', '--migrate-req', 'off']);
    }
    const migrateReq = Number(nsRun(netns, ['sysctl', '-n', 'net.ipv4.tcp_migrate_req']).trim());
    const before = counters(netns);
    // The client's packets to the port, except its SYN: the handshake ACK and the request.
    const b = await buffer({ netns, dport: PORT, tcpFlags: 'ACK/SYN,ACK', maxHoldMs: 15_000, control: false });
    let synRecvAtSwap = -1;
    let heldAtRelease = -1;
    let protect: ReloadOutcome['protect'];
    try {
      // Both of the client's held packets: the handshake ACK, then the request (PSH).
      const ackHeld = () =>
        until('the handshake ACK and the request held', async () => {
          const flags = ((await b.list()).packets ?? []).map((p) => p.flags);
          return flags.includes('ACK') && flags.includes('PSH,ACK');
        });
      const connectToOld = async () => {
        peer.send('connect');
        await peer.next('connected'); // SYN-ACK received: the client thinks it is connected
        await ackHeld(); // so the handshake waits in the old listener's queue
      };
      if (way === 'race' || way === 'migrate') {
        await connectToOld();
        synRecvAtSwap = ssCount(netns, 'syn-recv', PORT);
        peer.send('swap');
        await peer.next('swapped');
      } else {
        if (way === 'protect-late') await connectToOld(); // before protect's hold begins
        // CMD, run by protect while it holds new SYNs: waits for our go, then tells the server to swap.
        const cmd = `touch ${dir}/started; i=0; while [ ! -e ${dir}/go ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; kill -USR1 ${peer.pid}`;
        // --release-on swap: CMD only signals the server and exits before the swap is done (as `kill -USR2`
        // reloads do). With the default (sockets), CMD's exit with the old listener still the only one
        // reads as an fd hand-over and releases at once: the SYN then reaches the old listener (2 of 20 runs here).
        protectRun = cliAsync(netns, ['--json', 'protect', '--release-on', 'swap', '--max-hold', '10s', '--', 'sh', '-c', cmd]);
        await until('protect running CMD', () => existsSync(`${dir}/started`));
        if (way === 'protect') {
          peer.send('connect');
          // The kernel's word that protect holds the client's SYN: it has reached no listener.
          await until("the client's SYN held by protect", () => nfqueueTotal(netns, PROTECT_QUEUE) === 1);
        }
        synRecvAtSwap = ssCount(netns, 'syn-recv', PORT);
        writeFileSync(`${dir}/go`, '');
        await peer.next('swapped');
        protect = JSON.parse((await protectRun.done).stdout) as ReloadOutcome['protect'];
        if (way === 'protect') {
          // protect released the SYN to the new listener; the buffer holds the ACK as before.
          await peer.next('connected');
          await ackHeld();
        }
      }
      heldAtRelease = (await b.release()).released; // the held ACK and request go now
    } finally {
      await b.release().catch(() => undefined);
    }
    const result = await peer.next('result');
    const outcome: ReloadOutcome = {
      way,
      migrateReq,
      answer: result.answer as string | null,
      error: result.error as string | null,
      synRecvAtSwap,
      heldAtRelease,
      grew: grew(netns, before, COUNTERS),
    };
    if (protect) outcome.protect = protect;
    return outcome;
  } finally {
    protectRun?.kill(); // by its PID, if it is still running (a failed run): it releases, then ends CMD
    if (viaProtect) cli(netns, ['teardown']);
    peer.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

function cli(netns: string, args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, '--netns', netns, ...args], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`synhold ${args.join(' ')}: exit ${r.status ?? r.signal}: ${r.stderr}`);
  return r.stdout;
}

/** `synhold --netns NS ARGS` in the background; `done` rejects unless it exits 0. */
function cliAsync(netns: string, args: string[]): { done: Promise<{ stdout: string; stderr: string }>; kill(): void } {
  const child = spawn(process.execPath, [CLI, '--netns', netns, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let [stdout, stderr] = ['', ''];
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const done = new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      if (status === 0) resolve({ stdout, stderr });
      else reject(new Error(`synhold ${args.join(' ')}: exit ${status ?? signal}: ${stderr}`));
    }),
  );
  done.catch(() => undefined);
  return { done, kill: () => void (child.exitCode === null && child.signalCode === null && child.kill('SIGTERM')) };
}

/** One line per run, for people. */
export function describeReload(o: ReloadOutcome): string {
  const got = o.answer !== null ? `answer "${o.answer}"` : `error ${o.error}`;
  const p = o.protect ? `; protect: exit ${o.protect.exitCode}, ${o.protect.releaseCause} after ${o.protect.holdMs} ms, released ${o.protect.released}` : '';
  return `${o.way.padEnd(12)} migrate_req=${o.migrateReq} syn-recv at swap ${o.synRecvAtSwap}, released ${o.heldAtRelease}: ${got}; grew ${JSON.stringify(o.grew)}${p}`;
}

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 1);
  const { withNetns } = await import('../../test/helpers/netns.js');
  for (const way of ['race', 'protect', 'protect-late', 'migrate'] as const) {
    for (let i = 0; i < runs; i++) console.log(describeReload(await withNetns((ns) => reloadRace(ns.name, way))));
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
