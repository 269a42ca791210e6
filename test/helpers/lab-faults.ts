/**
 * Helpers for hold tests inside the kernel lab (User-Mode Linux, sch_plug):
 * clients started ahead of time and told when to connect, a gate that keeps a
 * command running until the test opens it, the plug's queue as `tc -s -j`
 * reports it, the lab's own release overhead, and a process's start time.
 *
 * The lab has one slow CPU: a node process takes about a second to start
 * there. So nothing on a hold's critical path starts a process if it can be
 * started before: an armed client is spawned first and connects within
 * milliseconds of go(), so a hold need not outlast a runtime start.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, constants as fsConstants, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestNetns } from './netns.js';
import { CLI, synhold } from './cli.js';
import { holdDirect } from './plug-hold.js';
import { StateStore } from '../../src/protect/state.js';
import type { StatsRecord } from '../../src/protect/state.js';
import type { StatusReport } from '../../src/protect/setup.js';
import { Rtnl } from '../../src/rtnl/rtnl.js';
import type { PlugState } from '../../src/backends/plug.js';

export const PORT = 16000;

/**
 * Waits for fn to hold. 60 s by default: generous on purpose. These waits are for things that do
 * happen (a hold to start, a SYN to reach the plug); how long they take is the lab's speed.
 */
export async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/**
 * A command that runs until the test opens the gate: `sh -c 'read x < FIFO'`. Unlike `sleep N`,
 * a slow client start can never outlive it. open() is idempotent; close() (in a finally) opens it
 * too, so no command is left waiting.
 */
export function gate(): { cmd: string[]; open(): Promise<void>; close(): Promise<void> } {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-gate-'));
  const fifo = join(dir, 'gate');
  const mk = spawnSync('mkfifo', [fifo]);
  assert.equal(mk.status, 0, `mkfifo: ${mk.stderr}`);
  let opened = false;
  const open = async (): Promise<void> => {
    if (opened) return;
    // O_NONBLOCK: ENXIO while no reader has the fifo open yet (the command is still starting);
    // a blocking open would stall this whole test process instead.
    const end = Date.now() + 60_000;
    for (;;) {
      try {
        const fd = openSync(fifo, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
        writeSync(fd, 'go\n');
        closeSync(fd);
        opened = true;
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENXIO' || Date.now() > end) throw e;
        await sleep(10);
      }
    }
  };
  return {
    cmd: ['sh', '-c', `read x < ${fifo}`],
    open,
    async close() {
      // The command may be gone already (killed with protect): then nobody reads; give up quietly.
      await Promise.race([open().catch(() => undefined), sleep(2_000)]);
      opened = true;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const ARMED_CLIENT = `
const net = require('net');
const [host, port, limit] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const out = { goAt: null, connectedAt: null, connectMs: null, error: null };
let done = false;
const finish = () => { if (done) return; done = true; console.log(JSON.stringify(out)); process.exit(0); };
process.stdin.once('data', () => {
  out.goAt = Date.now();
  const t0 = process.hrtime.bigint();
  const s = net.connect({ host, port });
  s.on('connect', () => { out.connectedAt = Date.now(); out.connectMs = Number(process.hrtime.bigint() - t0) / 1e6; s.destroy(); finish(); });
  s.on('error', (e) => { out.error = e.code || e.message; finish(); });
  setTimeout(() => { out.error = 'TIMEOUT'; finish(); }, limit).unref();
});
process.stdin.on('end', () => { if (out.goAt === null) { out.error = 'NOT_STARTED'; finish(); } });
console.log('ready');
`;

export interface ArmedResult {
  /** Epoch ms at which the client was told to connect (its own clock). */
  goAt: number | null;
  /** Epoch ms at which the handshake completed. */
  connectedAt: number | null;
  /** From go to the handshake, on the client's monotonic clock. */
  connectMs: number | null;
  error: string | null;
}

export interface ArmedClient {
  /** Resolves once the client process runs and waits for go(). */
  ready: Promise<void>;
  /** Connect now (one SYN; a held one waits in the plug). */
  go(): void;
  result: Promise<ArmedResult>;
  kill(): void;
}

/**
 * A TCP client started now (inside netns) that connects only when told: its start, a second of
 * the lab's one CPU, is paid before the hold, not during it. It gives up after limitMs.
 */
export function armedClient(netns: string, host: string, port: number, limitMs = 120_000): ArmedClient {
  const child: ChildProcess = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', ARMED_CLIENT, host, String(port), String(limitMs)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  child.stdin!.on('error', () => undefined);
  const lines = createInterface({ input: child.stdout! });
  let onReady!: () => void;
  const ready = new Promise<void>((r) => (onReady = r));
  const result = new Promise<ArmedResult>((resolve, reject) => {
    lines.on('line', (l) => {
      if (l === 'ready') onReady();
      else if (l.startsWith('{')) resolve(JSON.parse(l) as ArmedResult);
    });
    child.once('exit', (code) => setTimeout(() => reject(new Error(`armed client exited ${code} without a result`)), 100));
  });
  result.catch(() => undefined);
  return {
    ready,
    go: () => child.stdin!.write('go\n'),
    result,
    kill: () => child.kill('SIGKILL'),
  };
}

/** Starts n armed clients at once and resolves when all of them wait for go(). */
export async function armedClients(netns: string, n: number, limitMs?: number): Promise<ArmedClient[]> {
  const cs = Array.from({ length: n }, () => armedClient(netns, '127.0.0.1', PORT, limitMs));
  await Promise.all(cs.map((c) => c.ready));
  return cs;
}

interface TcQdisc {
  kind: string;
  qlen?: number;
  backlog?: number;
  drops?: number;
  packets?: number;
}

/**
 * The plug qdisc as `tc -s -j qdisc show` reports it (not synhold's own bookkeeping): on `dev`, or
 * by default on whichever device has it (lo's prio band for the seed's topology, the IFB's root for
 * the clsact redirect the default builds).
 */
export function plugOf(ns: TestNetns, dev?: string): TcQdisc | undefined {
  return (ns.tcJson(['-s', 'qdisc', 'show', ...(dev ? ['dev', dev] : [])]) as TcQdisc[]).find((q) => q.kind === 'plug');
}

/** Packets the plug holds now, from tc. */
export function plugQlen(ns: TestNetns, dev?: string): number {
  return plugOf(ns, dev)?.qlen ?? 0;
}

/** Whether a hold is on, from synhold's record (fast: no process to spawn, so short holds are not missed). */
export function holding(ns: TestNetns): boolean {
  return existsSync(StateStore.for(ns.name).holdPath);
}

export type LabStatus = StatusReport & { stats: StatsRecord };

export function status(ns: TestNetns): LabStatus {
  const r = synhold(['--netns', ns.name, '--json', 'status']);
  assert.ok(r.stdout.trim().startsWith('{'), `synhold status printed no JSON: ${r.stderr}`);
  return JSON.parse(r.stdout) as LabStatus;
}

export interface Calibration {
  max: number;
  raw: number[];
}

/**
 * What the lab itself needs to show a release to a test: from the test process releasing a plug
 * that holds a client's SYN (in-process netlink, no synhold process involved) to that client's
 * connect completing, once per client given (each is used up). A release by a hold's own path
 * adds the wake-up of the process that releases (the watchdog, protect, the daemon) on one slow
 * CPU, hence the lab's bounds of 50 ms + 3x the max of these.
 */
export async function releaseOverheadMs(ns: TestNetns, clients: ArmedClient[]): Promise<Calibration> {
  const state = StateStore.for(ns.name).readSetup()!.backendState as PlugState;
  const rt = Rtnl.open({ netns: ns.name });
  const raw: number[] = [];
  try {
    for (const c of clients) {
      const hold = await holdDirect(state, { rt, netns: ns.name });
      c.go();
      try {
        await until('the calibration SYN in the plug', () => plugQlen(ns) >= 1);
      } finally {
        const releasedAt = Date.now();
        await hold.release();
        const res = await c.result;
        assert.equal(res.error, null, 'calibration client connected');
        raw.push(res.connectedAt! - releasedAt);
      }
    }
  } finally {
    rt.close();
  }
  return { max: Math.max(...raw), raw };
}

/** The release-latency bound in this lab: 50 ms on top of 3x what observing any release costs here. */
export function killBound(cal: Calibration): number {
  return 50 + 3 * cal.max;
}

/** USER_HZ: the unit of /proc/PID/stat's start time (100 on every Linux architecture synhold runs on). */
const CLOCK_TICKS_PER_S = 100;

/**
 * When a process started, in epoch ms, from /proc (field 22 of /proc/PID/stat against
 * /proc/uptime; 10 ms resolution). For the watchdog, that is just before its max-hold clock
 * starts: a hold's length measured from here is never shorter than the real one.
 */
export function startEpochMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const startTicks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const now = Date.now();
    const uptimeS = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
    return Math.round(now - (uptimeS * 1000 - (startTicks * 1000) / CLOCK_TICKS_PER_S));
  } catch {
    return undefined;
  }
}

export interface LiveCli {
  pid: number;
  /** What it printed so far. */
  stdout(): string;
  stderr(): string;
  /** Once it exited and its output pipes closed (a watchdog that outlives it keeps its stderr open). */
  done: Promise<{ status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
  /** Whether it has exited. */
  exited(): boolean;
}

/** `synhold ARGS` in the background, its output readable while it runs (a process that never exits still says what it printed). */
export function synholdLive(args: string[], env: Record<string, string> = {}): LiveCli {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  let exited = false;
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  // 'exit', not 'close': a watchdog inherits protect's stderr, so the pipe can outlive protect.
  child.once('exit', () => (exited = true));
  const done = new Promise<{ status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr })),
  );
  return { pid: child.pid!, stdout: () => stdout, stderr: () => stderr, done, exited: () => exited };
}
