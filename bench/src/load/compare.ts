// The load generator held against the C clients, side by side, on one
// HAProxy -> nginx pair (the bench's: nginx-light answering "pong" on
// 127.0.0.1:8001, HAProxy on 127.0.0.1:16000), in a network namespace of its
// own, with a new connection per request at the same concurrency:
//
//   node dist/bench/src/load/compare.js [--rounds 5] [--seconds 10] [--concurrency 50]
//        [--clients loadgen,ab,wrk,wrk:t2] [--json FILE]
//
// Clients: `loadgen` (runLoad as the bench runs it: the native engine when
// it is built, else the JS engine), `loadgen:native` / `loadgen:native:tN`
// (the native engine, bench/native/loadgen-engine.c, with N epoll threads in
// its one process), `loadgen:js` / `loadgen:tN` (the JS engine in N worker
// threads, 0: the calling thread), `loadgen:socket` / `loadgen:tN:socket`
// (the JS engine over net.Socket), `module:PATH` (runLoad from another build
// of loadgen.js, for a before/after), `ab` (apache2-utils, HTTP/1.0), `wrk` /
// `wrk:tN` (N threads, `Connection: close`).
//
// Every round runs each client once for --seconds, in an order that rotates
// from round to round, so a slow drift of the machine spreads over all of
// them; the table gives the median of the rounds. Besides the rate, each run
// reports the CPU the client used (the generator: this process, plus the
// native engine's process, counted from this process's children times; ab and
// wrk: read from their shell's children times) and the servers used (HAProxy and
// nginx, from /proc), and how idle the machine's CPUs were: on a 2-CPU machine
// the client and the servers share the CPUs, so a client that needs more CPU
// per request leaves less to the servers and drives a lower rate.
//
// Run as root, alone: it creates and deletes its namespace
// (synhold-bench-PID-compare-*), and every process it starts is stopped by PID.

import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { addNetns, benchNetnsName, deleteNetns, inNetns } from '../netns.js';
import { startHaproxy, startNginx, installSignalCleanup, CleanupStack } from '../servers.js';
import { exec } from '../exec.js';
import { median as medianOf } from '../median.js';
import { abArgv, abError, parseAbOutput } from '../ab.js';
import { wrkArgv, wrkResult } from './wrk.js';
import { summarizeMs } from '../histogram.js';
import type { LoadOptions, LoadResult } from '../loadgen.js';

const HOST = '127.0.0.1';
const BACKEND_PORT = 8001;
const FRONTEND_PORT = 16000;

export const COMPARE_USAGE = `usage: node dist/bench/src/load/compare.js [--rounds N] [--seconds S] [--concurrency C] [--clients LIST] [--max-others PCT] [--json FILE]
  --clients   comma-separated: loadgen (runLoad's default engine), loadgen:native, loadgen:native:tN (the native engine,
              N threads), loadgen:js, loadgen:tN (the JS engine, N worker threads), loadgen:socket, loadgen:tN:socket,
              module:PATH, ab, wrk, wrk:tN (default: loadgen,ab,wrk,wrk:t2)
  --max-others a run during which other processes used more than PCT % of one CPU is run again, twice at most (default 15)`;

export type ClientSpec =
  | { kind: 'loadgen'; label: string; engine?: 'native' | 'js'; threads?: number; transport?: 'socket' }
  | { kind: 'module'; label: string; path: string }
  | { kind: 'ab'; label: string }
  | { kind: 'wrk'; label: string; threads: number };

export interface CompareArgs {
  rounds: number;
  seconds: number;
  concurrency: number;
  clients: ClientSpec[];
  json?: string;
  /** rerun (up to twice) a run during which other processes used more than this % of one CPU */
  maxOthers: number;
  /** set on the re-executed process, inside the namespace */
  inside?: string;
}

export function parseClient(s: string): ClientSpec {
  if (s.startsWith('module:')) return { kind: 'module', label: s, path: s.slice('module:'.length) };
  const [name, ...opts] = s.split(':');
  const threadsOpt = opts.find((x) => /^t\d+$/.test(x));
  const threads = threadsOpt !== undefined ? Number(threadsOpt.slice(1)) : undefined;
  const unknown = opts.filter((x) => x !== threadsOpt && !(name === 'loadgen' && ['socket', 'native', 'js'].includes(x)));
  if (unknown.length > 0) throw new Error(`client ${s}: unknown option ${unknown.join(':')}`);
  switch (name) {
    case 'loadgen': {
      const native = opts.includes('native');
      if (native && (opts.includes('socket') || opts.includes('js'))) throw new Error(`client ${s}: the native engine has no JS transport`);
      if (native && threads === 0) throw new Error(`client ${s}: the native engine runs on 1 thread or more`);
      // a thread count, a transport or "js" asks for the JS engine
      const engine = native ? ('native' as const) : threads !== undefined || opts.length > 0 ? ('js' as const) : undefined;
      return {
        kind: 'loadgen',
        label: s,
        ...(engine ? { engine } : {}),
        ...(threads !== undefined ? { threads } : {}),
        ...(opts.includes('socket') ? { transport: 'socket' as const } : {}),
      };
    }
    case 'ab':
      if (opts.length > 0) throw new Error('ab takes no options');
      return { kind: 'ab', label: s };
    case 'wrk':
      return { kind: 'wrk', label: s, threads: threads ?? 1 };
    default:
      throw new Error(`unknown client ${s}`);
  }
}

export function parseCompareArgs(argv: string[]): CompareArgs | 'help' {
  const a: CompareArgs = { rounds: 5, seconds: 10, concurrency: 50, maxOthers: 15, clients: ['loadgen', 'ab', 'wrk', 'wrk:t2'].map(parseClient) };
  const int = (flag: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${flag}: an integer from ${min} to ${max}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const v = argv[i + 1];
    switch (f) {
      case '--help':
      case '-h':
        return 'help';
      case '--rounds':
        a.rounds = int(f, v, 1, 50);
        i++;
        break;
      case '--seconds':
        a.seconds = int(f, v, 1, 600);
        i++;
        break;
      case '--concurrency':
        a.concurrency = int(f, v, 1, 1000);
        i++;
        break;
      case '--clients':
        if (!v) throw new Error('--clients: a list');
        a.clients = v.split(',').map(parseClient);
        i++;
        break;
      case '--max-others':
        a.maxOthers = int(f, v, 0, 10_000);
        i++;
        break;
      case '--json':
        if (!v) throw new Error('--json: a file');
        a.json = v;
        i++;
        break;
      case '--inside':
        if (!v) throw new Error('--inside: a namespace');
        a.inside = v;
        i++;
        break;
      default:
        throw new Error(`unknown argument ${f}`);
    }
  }
  return a;
}

export interface RunRecord {
  client: string;
  round: number;
  requests: number;
  failed: number;
  rps: number;
  /** ms: the generator's and ab's include the connect; wrk's do not */
  p50: number;
  p99: number;
  /** CPU time the client used, as a share of one CPU over the run (100 = one CPU busy) */
  clientCpuPct: number;
  /** the client's CPU per request, µs: in user space, and in the kernel (its system calls, and on lo much of the TCP work of both ends) */
  clientUserUs: number;
  clientSystemUs: number;
  /** the same for HAProxy and nginx together */
  serverCpuPct: number;
  /** how the machine's CPUs spent the run, in % of one CPU like the two above (softirq: mostly the TCP/IP stack on lo; steal: taken by the hypervisor) */
  machine: { user: number; system: number; softirq: number; steal: number; idle: number };
  /** user + system time of everything else on the machine (other people's work disturbs a run), same unit */
  othersCpuPct: number;
  /** runs of this client in this round thrown away because othersCpuPct exceeded --max-others */
  retried?: number;
  error?: string;
}

// ---------------------------------------------------------------- CPU accounting (/proc)

const CLK_TCK = 100; // USER_HZ: 100 on every Linux architecture this runs on

/** utime + stime of a process, seconds (0 if it is gone). */
function procCpuS(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // f[N - 3] is field N: utime 14, stime 15
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** The machine's CPU time so far, ticks of all CPUs together, by kind (/proc/stat's first line). */
interface MachineTicks {
  user: number;
  system: number;
  softirq: number;
  steal: number;
  idle: number;
  total: number;
}

function machineTicks(): MachineTicks {
  const line = readFileSync('/proc/stat', 'latin1').split('\n')[0]!;
  // cpu  user nice system idle iowait irq softirq steal
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const at = (i: number): number => v[i] ?? 0;
  return {
    user: at(0) + at(1),
    system: at(2) + at(5),
    softirq: at(6),
    steal: at(7),
    idle: at(3) + at(4),
    total: v.reduce((x, y) => x + y, 0),
  };
}

/** Each kind's share of the machine's CPU time between two readings, in % of one CPU (so they add up to 100 x the CPU count). */
function machineShares(a: MachineTicks, b: MachineTicks): RunRecord['machine'] {
  const total = b.total - a.total;
  const cpus = availableParallelism();
  const pct = (k: keyof MachineTicks): number => (total > 0 ? ((b[k] - a[k]) / total) * 100 * cpus : NaN);
  return { user: pct('user'), system: pct('system'), softirq: pct('softirq'), steal: pct('steal'), idle: pct('idle') };
}

/** argv under sh, which prints its children's CPU time (cutime, cstime of /proc/$$/stat) on stderr after it. */
function withChildCpu(argv: string[]): string[] {
  return ['sh', '-c', '"$@"; rc=$?; echo "child-cpu-ticks $(cut -d" " -f16,17 /proc/$$/stat)" >&2; exit $rc', 'sh', ...argv];
}

/** [user, system] seconds of the children of the withChildCpu shell. */
function childCpuS(stderr: string): [number, number] {
  const m = /child-cpu-ticks (\d+) (\d+)/.exec(stderr);
  return m ? [Number(m[1]) / CLK_TCK, Number(m[2]) / CLK_TCK] : [NaN, NaN];
}

/** The CPU fields of a ClientRun from user and system seconds. */
function cpuFields(userS: number, systemS: number, wallS: number, requests: number): Pick<ClientRun, 'clientCpuPct' | 'clientUserUs' | 'clientSystemUs'> {
  return {
    clientCpuPct: ((userS + systemS) / wallS) * 100,
    clientUserUs: (userS * 1e6) / requests,
    clientSystemUs: (systemS * 1e6) / requests,
  };
}

// ---------------------------------------------------------------- one run of one client

type RunLoad = (o: LoadOptions) => Promise<LoadResult>;
/** what the client itself tells about its run */
type ClientRun = Pick<RunRecord, 'requests' | 'failed' | 'rps' | 'p50' | 'p99' | 'clientCpuPct' | 'clientUserUs' | 'clientSystemUs' | 'error'>;

/** [user, system] seconds of this process's waited-for children (cutime, cstime): the native engine's process, once it has exited. */
function ownChildrenCpuS(): [number, number] {
  const stat = readFileSync('/proc/self/stat', 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // f[N - 3] is field N: cutime 16, cstime 17
  return [Number(f[13]) / CLK_TCK, Number(f[14]) / CLK_TCK];
}

async function runClient(c: ClientSpec, a: CompareArgs, loaders: Map<string, RunLoad>): Promise<ClientRun> {
  if (c.kind === 'loadgen' || c.kind === 'module') {
    const run = loaders.get(c.kind === 'module' ? c.path : '')!;
    const children0 = ownChildrenCpuS();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const r = await run({
      host: HOST,
      port: FRONTEND_PORT,
      concurrency: a.concurrency,
      durationMs: a.seconds * 1000,
      requestTimeoutMs: 5000,
      // as the bench runs it: failed requests kept, to charge them to reloads
      timeline: { limit: 200_000, failuresOnly: true },
      ...(c.kind === 'loadgen' && c.engine ? { engine: c.engine } : {}),
      ...(c.kind === 'loadgen' && c.threads !== undefined ? { threads: c.threads } : {}),
      ...(c.kind === 'loadgen' && c.transport ? { transport: c.transport } : {}),
    });
    const wallS = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    // runLoad has reaped the native engine's process before it returns
    const children1 = ownChildrenCpuS();
    cpu.user += (children1[0] - children0[0]) * 1e6;
    cpu.system += (children1[1] - children0[1]) * 1e6;
    const s = summarizeMs(r.latency);
    return {
      requests: r.requests,
      failed: r.failed + r.aborted,
      rps: r.throughput,
      p50: s.p50,
      p99: s.p99,
      ...cpuFields(cpu.user / 1e6, cpu.system / 1e6, wallS, r.requests),
    };
  }
  const t0 = performance.now();
  if (c.kind === 'ab') {
    const timeoutMs = (a.seconds + 60) * 1000;
    // -n: a bound above any rate this machine drives (ab allocates its stats for -n up front)
    const r = await exec(withChildCpu(abArgv(HOST, FRONTEND_PORT, a.seconds * 50_000, a.concurrency, { timeLimitS: a.seconds })), { timeoutMs });
    const wallS = (performance.now() - t0) / 1000;
    const p = parseAbOutput(r.stdout);
    const error = abError(r, p, timeoutMs);
    return {
      requests: p.complete,
      failed: p.failed,
      rps: p.rps,
      p50: p.p50,
      p99: p.p99,
      ...cpuFields(...childCpuS(r.stderr), wallS, p.complete),
      ...(error !== undefined ? { error } : {}),
    };
  }
  const o = { threads: c.threads, connections: a.concurrency, durationS: a.seconds };
  const r = await exec(withChildCpu(wrkArgv(HOST, FRONTEND_PORT, o)), { timeoutMs: (a.seconds + 30) * 1000 });
  const wallS = (performance.now() - t0) / 1000;
  const w = wrkResult(r, o);
  return {
    requests: w.requests,
    failed: w.socketErrors + w.non2xx,
    rps: w.rps,
    p50: w.p50,
    p99: w.p99,
    ...cpuFields(...childCpuS(r.stderr), wallS, w.requests),
    ...(w.error !== undefined ? { error: w.error } : {}),
  };
}

// ---------------------------------------------------------------- report

/** The median of the finite values (a run that failed has NaN fields), NaN if none. */
const median = (xs: number[]): number => {
  const finite = xs.filter((x) => Number.isFinite(x));
  return medianOf(finite);
};

const fmt = (x: number, digits = 0): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');

export function compareTable(a: CompareArgs, runs: RunRecord[]): string {
  const lines = [
    `${a.rounds} rounds of ${a.seconds} s per client, concurrency ${a.concurrency}, a new connection per request, HAProxy -> nginx on 127.0.0.1; medians of the rounds.`,
    "The client's CPU per request, user + system (on lo the kernel does much of the TCP work of both ends in the client's system calls), then CPU in % of one CPU: the client, HAProxy and nginx, softirq (the rest of the TCP/IP stack on lo), other processes, idle.",
    '',
    '| client | req/s (median) | min | max | failed | p50 ms | p99 ms | client µs/req user + sys | client CPU % | servers CPU % | softirq % | others % | idle % |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of a.clients) {
    const rs = runs.filter((r) => r.client === c.label && r.error === undefined);
    const rps = rs.map((r) => r.rps);
    lines.push(
      `| ${c.label} | ${fmt(median(rps))} | ${fmt(Math.min(...rps))} | ${fmt(Math.max(...rps))} | ${rs.reduce((x, r) => x + r.failed, 0)} | ${fmt(median(rs.map((r) => r.p50)), 2)} | ${fmt(median(rs.map((r) => r.p99)), 2)} | ${fmt(median(rs.map((r) => r.clientUserUs)), 1)} + ${fmt(median(rs.map((r) => r.clientSystemUs)), 1)} | ${fmt(median(rs.map((r) => r.clientCpuPct)))} | ${fmt(median(rs.map((r) => r.serverCpuPct)))} | ${fmt(median(rs.map((r) => r.machine.softirq)))} | ${fmt(median(rs.map((r) => r.othersCpuPct)))} | ${fmt(median(rs.map((r) => r.machine.idle)))} |`,
    );
  }
  const med = (label: string): number => median(runs.filter((r) => r.client === label && r.error === undefined).map((r) => r.rps));
  const cClients = a.clients.filter((c) => c.kind === 'ab' || c.kind === 'wrk');
  const best = cClients.map((c) => ({ label: c.label, rps: med(c.label) })).sort((x, y) => y.rps - x.rps)[0];
  if (best && Number.isFinite(best.rps)) {
    lines.push('');
    for (const c of a.clients.filter((x) => x.kind === 'loadgen' || x.kind === 'module')) {
      lines.push(`- ${c.label}: ${fmt((med(c.label) / best.rps) * 100, 1)}% of the best C client (${best.label}, ${fmt(best.rps)} req/s)`);
    }
  }
  const errors = runs.filter((r) => r.error !== undefined);
  if (errors.length > 0) {
    lines.push('');
    for (const r of errors) lines.push(`- round ${r.round} ${r.client}: ${r.error}`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- inside the namespace

async function inside(a: CompareArgs): Promise<number> {
  if (!inNetns(a.inside!)) {
    process.stderr.write(`compare: not inside the namespace ${a.inside}: refusing to bind the bench's fixed ports here\n`);
    return 1;
  }
  installSignalCleanup();
  const loaders = new Map<string, RunLoad>();
  loaders.set('', (await import('../loadgen.js')).runLoad);
  for (const c of a.clients) {
    if (c.kind === 'module') loaders.set(c.path, ((await import(pathToFileURL(c.path).href)) as { runLoad: RunLoad }).runLoad);
  }
  const cl = new CleanupStack();
  const runs: RunRecord[] = [];
  try {
    const nginx = await startNginx({ host: HOST, port: BACKEND_PORT, workers: 1 });
    cl.add(() => nginx.stop());
    const hap = await startHaproxy({ host: HOST, port: FRONTEND_PORT, backendHost: HOST, backendPort: BACKEND_PORT });
    cl.add(() => hap.stop());
    // warm-up, not counted: every client then meets warm servers
    await loaders.get('')!({ host: HOST, port: FRONTEND_PORT, concurrency: 10, requests: 2000, deadlineMs: 60_000 });
    const servers = (): number[] => [...hap.processes(), ...nginx.processes()].map((p) => p.pid);
    for (let round = 1; round <= a.rounds; round++) {
      const k = a.clients.length;
      const order = a.clients.map((_, i) => a.clients[(i + round - 1) % k]!);
      for (const c of order) {
        let rec: RunRecord | undefined;
        for (let attempt = 0; attempt < 3; attempt++) {
          await sleep(1000);
          const pids = servers();
          const srv0 = pids.reduce((x, p) => x + procCpuS(p), 0);
          const m0 = machineTicks();
          const t0 = performance.now();
          const r = await runClient(c, a, loaders);
          const wallS = (performance.now() - t0) / 1000;
          const m1 = machineTicks();
          const srv1 = pids.reduce((x, p) => x + procCpuS(p), 0);
          const serverCpuPct = ((srv1 - srv0) / wallS) * 100;
          const machine = machineShares(m0, m1);
          const othersCpuPct = Math.max(0, machine.user + machine.system - r.clientCpuPct - serverCpuPct);
          rec = { client: c.label, round, ...r, serverCpuPct, machine, othersCpuPct, ...(attempt > 0 ? { retried: attempt } : {}) };
          if (othersCpuPct <= a.maxOthers) break;
          process.stderr.write(`round ${round} ${c.label}: other processes used ${fmt(othersCpuPct)}% of a CPU meanwhile (${fmt(rec.rps)} req/s): again\n`);
        }
        if (!rec) continue;
        runs.push(rec);
        process.stderr.write(
          `round ${round} ${c.label.padEnd(18)} ${fmt(rec.rps).padStart(6)} req/s, ${rec.requests} requests, ${rec.failed} failed, p50 ${fmt(rec.p50, 2)} ms, p99 ${fmt(rec.p99, 2)} ms, client CPU ${fmt(rec.clientCpuPct)}% (${fmt(rec.clientUserUs, 1)} + ${fmt(rec.clientSystemUs, 1)} µs/req), servers ${fmt(rec.serverCpuPct)}%, others ${fmt(rec.othersCpuPct)}%; machine: user ${fmt(rec.machine.user)}% sys ${fmt(rec.machine.system)}% softirq ${fmt(rec.machine.softirq)}% steal ${fmt(rec.machine.steal)}% idle ${fmt(rec.machine.idle)}%${rec.error ? ` ERROR ${rec.error}` : ''}\n`,
        );
      }
    }
  } finally {
    const errs = await cl.run();
    for (const e of errs) process.stderr.write(`compare: clean-up: ${e.message}\n`);
  }
  process.stdout.write(`${compareTable(a, runs)}\n`);
  if (a.json) writeFileSync(a.json, `${JSON.stringify({ args: { ...a, inside: undefined }, runs }, null, 1)}\n`);
  return 0;
}

// ---------------------------------------------------------------- outside: the namespace around it

async function outside(a: CompareArgs, argv: string[]): Promise<number> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    process.stderr.write('compare: needs root (it creates a network namespace)\n');
    return 1;
  }
  const name = benchNetnsName('compare');
  await addNetns(name);
  try {
    // each run is bounded by its own duration; this bounds the whole
    const budgetMs = a.rounds * a.clients.length * (a.seconds + 40) * 1000 + 120_000;
    const child = spawn('ip', ['netns', 'exec', name, process.execPath, fileURLToPath(import.meta.url), ...argv, '--inside', name], { stdio: 'inherit' });
    // An interrupt stops the run inside (its servers die with it, by PID) and
    // still deletes the namespace below.
    const forward = (sig: NodeJS.Signals): void => {
      if (child.pid !== undefined) process.kill(child.pid, sig);
    };
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    const code = await new Promise<number>((resolve) => {
      const timer = setTimeout(() => {
        process.stderr.write(`compare: over its time budget (${budgetMs} ms): stopping it\n`);
        if (child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
      }, budgetMs);
      child.on('exit', (c, sig) => {
        clearTimeout(timer);
        resolve(c ?? (sig ? 128 : 1));
      });
      child.on('error', (e) => {
        clearTimeout(timer);
        process.stderr.write(`compare: ${e.message}\n`);
        resolve(1);
      });
    });
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
    return code;
  } finally {
    const left = await deleteNetns(name);
    if (left.length > 0) process.stderr.write(`compare: stopped processes left in ${name}: ${left.join(', ')}\n`);
  }
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let a: CompareArgs | 'help';
  try {
    a = parseCompareArgs(argv);
  } catch (e) {
    process.stderr.write(`compare: ${(e as Error).message}\n${COMPARE_USAGE}\n`);
    return 2;
  }
  if (a === 'help') {
    process.stdout.write(`${COMPARE_USAGE}\n`);
    return 0;
  }
  return a.inside ? inside(a) : outside(a, argv);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolvePath(process.argv[1])) {
  main().then(
    // After stdout has drained: process.exit right after a write can cut a piped result short.
    (code) => process.stdout.write('', () => process.exit(code)),
    (e: unknown) => {
      process.stderr.write(`compare: ${e instanceof Error ? e.stack : String(e)}\n`);
      process.exit(1);
    },
  );
}
