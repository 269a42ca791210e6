// Real servers for the bench, from Debian's packages: nginx-light answering
// "pong" (the seed's backend on 8001) and HAProxy 2.6 in front of it (the seed's
// frontend on 16000), each in its own temp dir, tracked and killed by PID.
//
// WHY real servers and not a Node stub: the failure the bench measures lives in
// HAProxy's reload (the new process binds, the old one closes its listener and
// the kernel resets whatever sat in the old accept queue). Only the real
// binary, reloaded the way operators reload it, reproduces it.
//
// Reload flavours (each measured from spawn/signal to completion):
//   "sf"            the seed's: haproxy -f CFG -p PIDFILE -D -sf $(cat PIDFILE)
//                   (-D: the command must return, as in the seed's init script)
//   "seamless"      the same plus -x STATS_SOCK, with `stats socket … expose-fd
//                   listeners`: the new process takes the listening sockets over
//                   from the old one instead of binding new ones (HAProxy >= 1.8)
//   "master-worker" haproxy -W -S MASTER_SOCK in the foreground; reload = SIGUSR2
//                   to the master, done when the master logs "Loading success."
//
// Cleanup: every process whose command line names the server's temp dir is ours
// (old HAProxy processes still finishing their connections included); stop()
// TERMs them, KILLs leftovers, verifies none is left, then removes the temp dir.
// A process-exit hook SIGKILLs whatever is still registered if the bench dies
// without reaching its finally blocks.

import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { probeTcp } from '../../src/protect/ready.js';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync, openSync, closeSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { findByCmdline, descendants, killAll, own, isRunning, type OwnedProc } from './procs.js';
import { runLoad } from './loadgen.js';
import { checkTarget } from './target.js';

export const NGINX_BIN = '/usr/sbin/nginx';
export const HAPROXY_BIN = '/usr/sbin/haproxy';

// ---------------------------------------------------------------- helpers

/** A TCP port that was free a moment ago (bind to 0, read, close). Racy by
 * nature but fine for tests: nothing else on this machine grabs ports at random. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen({ host, port: 0, exclusive: true }, () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Resolve when a TCP connect to host:port succeeds; reject after timeoutMs. */
export async function waitForPort(host: string, port: number, timeoutMs = 5000): Promise<void> {
  const h = checkTarget(host, { namespaceLocal: true });
  const end = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    if (await probeTcp(h, port, 500)) return;
    if (Date.now() >= end) throw new Error(`nothing listening on ${host}:${port} after ${timeoutMs} ms`);
    await sleep(Math.min(50, 5 * (attempt + 1)));
  }
}

/** Resolve when GET / on host:port answers 200 with `expectBody`; reject after timeoutMs. */
export async function waitForHttp(
  host: string,
  port: number,
  opts: { expectBody?: string | null; timeoutMs?: number; namespaceLocal?: boolean } = {},
): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const end = Date.now() + timeoutMs;
  let last = '';
  for (let attempt = 0; ; attempt++) {
    const r = await runLoad({
      host,
      port,
      namespaceLocal: opts.namespaceLocal ?? false,
      requests: 1,
      concurrency: 1,
      requestTimeoutMs: 1000,
      expectBody: opts.expectBody === undefined ? 'pong' : opts.expectBody,
    });
    if (r.outcomes.ok === 1) return;
    last = JSON.stringify(r.details);
    if (Date.now() >= end) throw new Error(`no good HTTP answer from ${host}:${port} after ${timeoutMs} ms (last: ${last})`);
    await sleep(Math.min(50, 5 * (attempt + 1)));
  }
}

function makeDir(kind: string): string {
  return mkdtempSync(join(tmpdir(), `synhold-bench-${kind}-`));
}

/** The last `max` bytes of a file from byte `from` on ("" if missing). */
function readTail(path: string, from = 0, max = 4000): string {
  try {
    const b = readFileSync(path);
    const start = Math.max(from, b.length - max);
    return b.subarray(start).toString('utf8').trim();
  } catch {
    return '';
  }
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

function readPidFile(path: string): number[] {
  try {
    return readFileSync(path, 'latin1')
      .split(/\s+/)
      .filter((s) => /^\d+$/.test(s))
      .map(Number);
  } catch {
    return [];
  }
}

export interface CommandResult {
  argv: string[];
  /** epoch ms at spawn */
  startedAt: number;
  /** performance.now() at spawn (same clock as the load generator's timeline) */
  startMs: number;
  /** spawn → exit, ms */
  durationMs: number;
  exitCode: number | null;
  signal: string | null;
  /** spawn error (ENOENT…) or "timeout" */
  error?: string;
  /** tail of its stdout+stderr when it failed */
  output?: string;
}

/**
 * Run a command to completion, output appended to `logPath` (a file, not a pipe:
 * a daemonising child may keep inherited fds open, and a file cannot block it).
 * Killed (SIGKILL, by its PID) after timeoutMs.
 */
export function runCommand(argv: string[], logPath: string, timeoutMs = 30_000): Promise<CommandResult> {
  return new Promise((resolve) => {
    const from = fileSize(logPath);
    const fd = openSync(logPath, 'a');
    const startedAt = Date.now();
    const startMs = performance.now();
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    let done = false;
    const finish = (code: number | null, sig: string | null, error?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const r: CommandResult = { argv, startedAt, startMs, durationMs: performance.now() - startMs, exitCode: code, signal: sig };
      if (error !== undefined) r.error = error;
      if (code !== 0) r.output = readTail(logPath, from);
      resolve(r);
    };
    const timer = setTimeout(() => {
      if (child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      finish(null, 'SIGKILL', 'timeout');
    }, timeoutMs);
    child.on('error', (e: NodeJS.ErrnoException) => finish(null, null, e.code ?? e.message));
    child.on('exit', (code, sig) => finish(code, sig));
  });
}

// ---------------------------------------------------------------- registry / cleanup

interface Registered {
  marker: string;
  dir: string;
  /** processes that do not carry the marker (nginx workers rewrite their argv) */
  extra?: () => OwnedProc[];
}
const registry = new Set<Registered>();
let exitHookInstalled = false;

function register(r: Registered): void {
  registry.add(r);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // Last resort if the bench exits without its finally blocks (uncaught error,
    // process.exit): synchronous, so only SIGKILL + rmSync.
    process.on('exit', () => {
      for (const reg of registry) {
        for (const p of [...(reg.extra?.() ?? []), ...findByCmdline(reg.marker)]) {
          try {
            process.kill(p.pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        rmSync(reg.dir, { recursive: true, force: true });
      }
    });
  }
}

/**
 * Make SIGINT/SIGTERM/SIGHUP exit the process through process.exit(), so the
 * exit hook above still kills every registered server by PID (a signal's
 * default action would end the process without running it). For entry points
 * (the bench worker), not for libraries: it changes the process's signal handling.
 */
export function installSignalCleanup(): void {
  for (const [sig, n] of [
    ['SIGINT', 2],
    ['SIGTERM', 15],
    ['SIGHUP', 1],
  ] as const) {
    process.once(sig, () => {
      process.stderr.write(`\n${sig}: stopping bench servers\n`);
      process.exit(128 + n);
    });
  }
}

/** Run async cleanups LIFO, all of them even when some throw. */
export class CleanupStack {
  private fns: Array<() => Promise<void> | void> = [];
  add(fn: () => Promise<void> | void): void {
    this.fns.push(fn);
  }
  async run(): Promise<Error[]> {
    const errors: Error[] = [];
    while (this.fns.length > 0) {
      const fn = this.fns.pop()!;
      try {
        await fn();
      } catch (e) {
        errors.push(e instanceof Error ? e : new Error(String(e)));
      }
    }
    return errors;
  }
}

/** Stop everything whose cmdline names `marker`, verify, remove `dir`. Throws if anything survived. */
async function stopByMarker(reg: Registered, extra: OwnedProc[], sig: NodeJS.Signals): Promise<void> {
  const procs = [...extra, ...findByCmdline(reg.marker)];
  const seen = new Set<string>();
  const uniq = procs.filter((p) => {
    const k = `${p.pid}:${p.startTime}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  const left = await killAll(uniq, { sig });
  // Another round for anything that appeared meanwhile (a reload finishing).
  const late = findByCmdline(reg.marker);
  const left2 = late.length > 0 ? await killAll(late, { sig: 'SIGKILL' }) : [];
  registry.delete(reg);
  rmSync(reg.dir, { recursive: true, force: true });
  const survivors = [...left, ...left2];
  if (survivors.length > 0) {
    throw new Error(`processes still running after cleanup: ${survivors.map((p) => p.pid).join(', ')}`);
  }
}

// ---------------------------------------------------------------- nginx

export interface NginxOptions {
  host?: string;
  /** default: a free port */
  port?: number;
  /** 1 or 2 worker processes (default 1) */
  workers?: number;
  /** listen backlog (default 4096; the kernel caps it at net.core.somaxconn) */
  backlog?: number;
  /** response body (default "pong") */
  body?: string;
  startTimeoutMs?: number;
}

export interface NginxServer {
  kind: 'nginx';
  host: string;
  port: number;
  dir: string;
  confPath: string;
  errorLog: string;
  /** the master's PID (our child) */
  pid: number;
  /** every live process of this server (master + workers) */
  processes(): OwnedProc[];
  stop(): Promise<void>;
}

export function nginxConfig(o: { dir: string; host: string; port: number; workers: number; backlog: number; body: string }): string {
  const listenHost = o.host.includes(':') ? `[${o.host}]` : o.host;
  const t = (n: string): string => join(o.dir, 'tmp', n);
  return `# synhold bench backend (the seed's "pong" server on 8001)
daemon off;
master_process on;
worker_processes ${o.workers};
pid ${join(o.dir, 'nginx.pid')};
error_log ${join(o.dir, 'error.log')} warn;
events {
    worker_connections 8192;
}
http {
    access_log off;
    client_body_temp_path ${t('body')};
    proxy_temp_path ${t('proxy')};
    fastcgi_temp_path ${t('fastcgi')};
    uwsgi_temp_path ${t('uwsgi')};
    scgi_temp_path ${t('scgi')};
    keepalive_timeout 30s;
    keepalive_requests 100000;
    server {
        listen ${listenHost}:${o.port} backlog=${o.backlog};
        location / {
            default_type text/plain;
            return 200 ${JSON.stringify(o.body)};
        }
    }
}
`;
}

export async function startNginx(o: NginxOptions = {}): Promise<NginxServer> {
  if (!existsSync(NGINX_BIN)) throw new Error(`${NGINX_BIN} not found: install the Debian package nginx-light`);
  const host = checkTarget(o.host ?? '127.0.0.1', { namespaceLocal: true });
  const port = o.port ?? (await freePort(host));
  const workers = o.workers ?? 1;
  if (workers < 1 || workers > 2) throw new Error('nginx workers: 1 or 2');
  const dir = makeDir('nginx');
  const reg: Registered = { marker: dir, dir };
  register(reg);
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  const confPath = join(dir, 'nginx.conf');
  const errorLog = join(dir, 'error.log');
  writeFileSync(confPath, nginxConfig({ dir, host, port, workers, backlog: o.backlog ?? 4096, body: o.body ?? 'pong' }));
  const logPath = join(dir, 'stdio.log');
  const fd = openSync(logPath, 'a');
  // -e: the error log before the config is read (else nginx writes /var/log/nginx).
  const child = spawn(NGINX_BIN, ['-c', confPath, '-p', dir, '-e', errorLog], { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const spawnError = new Promise<never>((_, reject) => child.once('error', reject));
  spawnError.catch(() => undefined);
  const master = child.pid !== undefined ? own(child.pid) : null;
  reg.extra = () => (master && isRunning(master) ? [master, ...descendants(master.pid)] : []);
  const server: NginxServer = {
    kind: 'nginx',
    host,
    port,
    dir,
    confPath,
    errorLog,
    pid: child.pid ?? -1,
    // Workers rewrite their argv ("nginx: worker process"), so they do not carry
    // the marker: they are found as the master's children. A worker caught between
    // fork and that rewrite is found both ways, hence one entry per PID.
    processes: () => {
      const procs = findByCmdline(dir);
      const all = master && isRunning(master) ? [...procs, ...descendants(master.pid)] : procs;
      return [...new Map(all.map((p) => [p.pid, p])).values()];
    },
    stop: async () => {
      const exited = new Promise<void>((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
      await stopByMarker(reg, server.processes().concat(master ? [master] : []), 'SIGTERM');
      await Promise.race([exited, sleep(1000)]);
    },
  };
  try {
    const exitEarly = new Promise<never>((_, reject) =>
      child.once('exit', (code) => reject(new Error(`nginx exited at start (code ${code}): ${readTail(errorLog)} ${readTail(logPath)}`))),
    );
    exitEarly.catch(() => undefined);
    await Promise.race([
      waitForHttp(host, port, { expectBody: o.body ?? 'pong', timeoutMs: o.startTimeoutMs ?? 5000, namespaceLocal: true }),
      exitEarly,
      spawnError,
    ]);
  } catch (e) {
    await server.stop().catch(() => undefined);
    throw e;
  }
  return server;
}

// ---------------------------------------------------------------- haproxy

export type HaproxyMode = 'sf' | 'seamless' | 'master-worker';

export interface HaproxyOptions {
  backendHost?: string;
  backendPort: number;
  /** frontend address (default 127.0.0.1) and port (default 16000, the seed's) */
  host?: string;
  port?: number;
  mode?: HaproxyMode;
  /** global/default maxconn (default 4000: HAProxy needs ~2 fds per connection
   * and this machine's hard RLIMIT_NOFILE is 20000) */
  maxconn?: number;
  /** global hard-stop-after, s: old processes end by themselves (default 30) */
  hardStopAfterS?: number;
  /** frontend listen backlog (default: HAProxy's own) */
  backlog?: number;
  /** nbthread (default: HAProxy's own, one per CPU) */
  threads?: number;
  /** add a stats socket even in "sf" mode */
  statsSocket?: boolean;
  startTimeoutMs?: number;
  /** per reload (default 30 s) */
  reloadTimeoutMs?: number;
  /** master-worker: the executable to start instead of HAPROXY_BIN (a wrapper; the master
   * re-executes its own argv[0] on every reload, so the wrapper sees those too) */
  bin?: string;
}

export interface ReloadRecord extends CommandResult {
  mode: HaproxyMode;
  ok: boolean;
  /** PIDs in the pidfile before and after (master-worker: the worker PIDs from the master CLI) */
  oldPids: number[];
  newPids: number[];
  /** master-worker: signal → master CLI lists the new worker (≥ durationMs) */
  readyMs?: number;
}

export interface HaproxyServer {
  kind: 'haproxy';
  mode: HaproxyMode;
  host: string;
  port: number;
  backendHost: string;
  backendPort: number;
  dir: string;
  cfgPath: string;
  pidFile: string;
  statsSocket?: string;
  masterSocket?: string;
  /** stdout/stderr of every haproxy command (and the master) */
  logPath: string;
  /** PIDs in the pidfile now (daemon modes: the current process; master-worker: the master) */
  currentPids(): number[];
  /** every live process of this server, old ones still draining included */
  processes(): OwnedProc[];
  /** argv of the reload command as it would run now (null in master-worker mode,
   * where a reload is a signal, not a command) */
  reloadArgv(): string[] | null;
  /** Reload once and measure it. `argv` replaces reloadArgv() (a wrapped command). */
  reload(opts?: { argv?: string[] }): Promise<ReloadRecord>;
  stop(): Promise<void>;
}

export function haproxyConfig(o: {
  dir: string;
  host: string;
  port: number;
  backendHost: string;
  backendPort: number;
  maxconn: number;
  hardStopAfterS: number;
  backlog?: number;
  threads?: number;
  statsSocket?: string;
}): string {
  const bindHost = o.host.includes(':') ? `[${o.host}]` : o.host;
  const beHost = o.backendHost.includes(':') ? `[${o.backendHost}]` : o.backendHost;
  const lines = [
    "# synhold bench frontend (the seed's HAProxy on 16000, one backend)",
    'global',
    `    maxconn ${o.maxconn}`,
    // old processes left by -sf end by themselves even if a client hangs
    `    hard-stop-after ${o.hardStopAfterS}s`,
  ];
  if (o.threads !== undefined) lines.push(`    nbthread ${o.threads}`);
  if (o.statsSocket) lines.push(`    stats socket ${o.statsSocket} mode 600 level admin expose-fd listeners`);
  lines.push(
    '',
    'defaults',
    '    mode http',
    `    maxconn ${o.maxconn}`,
    '    timeout connect 5s',
    '    timeout client 30s',
    '    timeout server 30s',
    '    timeout http-request 10s',
    '',
    'frontend fe',
    `    bind ${bindHost}:${o.port}${o.backlog !== undefined ? ` backlog ${o.backlog}` : ''}`,
    '    default_backend be',
    '',
    'backend be',
    `    server pong ${beHost}:${o.backendPort}`,
    '',
  );
  return lines.join('\n');
}

export async function startHaproxy(o: HaproxyOptions): Promise<HaproxyServer> {
  if (!existsSync(HAPROXY_BIN)) throw new Error(`${HAPROXY_BIN} not found: install the Debian package haproxy (2.6 in bookworm)`);
  const mode = o.mode ?? 'sf';
  const host = checkTarget(o.host ?? '127.0.0.1', { namespaceLocal: true });
  const backendHost = checkTarget(o.backendHost ?? '127.0.0.1', { namespaceLocal: true });
  const port = o.port ?? 16000;
  const dir = makeDir('haproxy');
  const reg: Registered = { marker: dir, dir };
  register(reg);
  const cfgPath = join(dir, 'haproxy.cfg');
  const pidFile = join(dir, 'haproxy.pid');
  const logPath = join(dir, 'haproxy.log');
  const statsSocket = mode === 'seamless' || o.statsSocket ? join(dir, 'stats.sock') : undefined;
  const masterSocket = mode === 'master-worker' ? join(dir, 'master.sock') : undefined;
  writeFileSync(
    cfgPath,
    haproxyConfig({
      dir,
      host,
      port,
      backendHost,
      backendPort: o.backendPort,
      maxconn: o.maxconn ?? 4000,
      hardStopAfterS: o.hardStopAfterS ?? 30,
      ...(o.backlog !== undefined ? { backlog: o.backlog } : {}),
      ...(o.threads !== undefined ? { threads: o.threads } : {}),
      ...(statsSocket ? { statsSocket } : {}),
    }),
  );
  writeFileSync(logPath, '');
  const reloadTimeoutMs = o.reloadTimeoutMs ?? 30_000;

  let master: ChildProcess | undefined;
  let masterProc: OwnedProc | null = null;
  let masterOutput = '';
  let loadEvents = 0; // "Loading success."/"Loading failure" lines seen from the master
  let workers: number[] = []; // master-worker: current worker PIDs, from the master CLI
  let lastLoadLine = '';
  const loadWaiters: Array<() => void> = [];

  const server: HaproxyServer = {
    kind: 'haproxy',
    mode,
    host,
    port,
    backendHost,
    backendPort: o.backendPort,
    dir,
    cfgPath,
    pidFile,
    ...(statsSocket ? { statsSocket } : {}),
    ...(masterSocket ? { masterSocket } : {}),
    logPath,
    currentPids: () => readPidFile(pidFile),
    processes: () => findByCmdline(dir),
    reloadArgv: () => {
      if (mode === 'master-worker') return null;
      // Exactly the seed's `haproxy -f CFG -p PIDFILE -sf $(cat PIDFILE)`, with -D.
      const argv = [HAPROXY_BIN, '-f', cfgPath, '-p', pidFile, '-D'];
      if (mode === 'seamless') argv.push('-x', statsSocket!);
      const old = readPidFile(pidFile);
      if (old.length > 0) argv.push('-sf', ...old.map(String));
      return argv;
    },
    reload: async (ro = {}) => {
      const oldPids = readPidFile(pidFile);
      if (mode !== 'master-worker') {
        const argv = ro.argv ?? server.reloadArgv()!;
        const r = await runCommand(argv, logPath, reloadTimeoutMs);
        return { ...r, mode, ok: r.exitCode === 0, oldPids, newPids: readPidFile(pidFile) };
      }
      // master-worker: SIGUSR2 to the master; it re-executes itself, loads the
      // config, forks a new worker and logs "Loading success." — that line ends
      // the measured reload (durationMs). ro.argv, if given, is run instead of
      // the signal (a wrapper that signals the master itself).
      // Then we wait until the master CLI lists a new worker (readyMs): measured
      // here, the re-executed master ignores a SIGUSR2 that arrives between
      // "Loading success." and its event loop, so a reload loop that signalled
      // again right away would lose every other reload.
      const startedAt = Date.now();
      const startMs = performance.now();
      const before = loadEvents;
      const prevWorkers = workers;
      const done = new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), reloadTimeoutMs);
        const check = (): void => {
          if (loadEvents > before) {
            clearTimeout(t);
            resolve(true);
          } else loadWaiters.push(check);
        };
        check();
      });
      let cmd: CommandResult | undefined;
      if (ro.argv) cmd = await runCommand(ro.argv, logPath, reloadTimeoutMs);
      else if (masterProc && isRunning(masterProc)) process.kill(masterProc.pid, 'SIGUSR2');
      const arrived = await done;
      const durationMs = performance.now() - startMs;
      const success = arrived && /Loading success/.test(lastLoadLine);
      let ready = false;
      if (success) {
        const w = await pollNewWorkers(masterSocket!, prevWorkers, Math.max(0, reloadTimeoutMs - durationMs));
        if (w) {
          workers = w;
          ready = true;
        }
      }
      const ok = success && ready && (!cmd || cmd.exitCode === 0);
      const rec: ReloadRecord = {
        argv: ro.argv ?? ['kill', '-USR2', String(masterProc?.pid ?? '?')],
        startedAt,
        startMs,
        durationMs,
        exitCode: arrived ? (ok ? 0 : 1) : null,
        signal: null,
        mode,
        ok,
        oldPids: prevWorkers,
        newPids: workers,
        readyMs: performance.now() - startMs,
      };
      if (!arrived) rec.error = 'timeout';
      else if (success && !ready) rec.error = 'master CLI never listed a new worker';
      if (!rec.ok) rec.output = masterOutput.slice(-4000);
      return rec;
    },
    stop: async () => {
      const extra: OwnedProc[] = [];
      if (masterProc) extra.push(masterProc);
      for (const pid of readPidFile(pidFile)) {
        const p = own(pid);
        if (p) extra.push(p);
      }
      // SIGTERM = HAProxy's hard stop (SIGUSR1 would be the soft one).
      await stopByMarker(reg, extra, 'SIGTERM');
    },
  };

  try {
    if (mode === 'master-worker') {
      // Foreground master: our child, its stderr a pipe we watch for load events.
      master = spawn(o.bin ?? HAPROXY_BIN, ['-W', '-S', masterSocket!, '-f', cfgPath, '-p', pidFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      masterProc = master.pid !== undefined ? own(master.pid) : null;
      let partial = '';
      const onData = (d: Buffer): void => {
        const s = d.toString('utf8');
        if (masterOutput.length < 1_000_000) masterOutput += s;
        partial += s;
        const lines = partial.split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) {
          if (/Loading (success|failure)/.test(line)) {
            lastLoadLine = line;
            loadEvents++;
            for (const w of loadWaiters.splice(0)) w();
          }
        }
      };
      master.stdout!.on('data', onData);
      master.stderr!.on('data', onData);
      const failed = new Promise<never>((_, reject) => {
        master!.once('error', reject);
        master!.once('exit', (code) => reject(new Error(`haproxy master exited at start (code ${code}): ${masterOutput.slice(-2000)}`)));
      });
      failed.catch(() => undefined);
      // The master logs "Loading success." for its initial load too: wait for
      // it, or the first reload would take that line for its own completion.
      const loaded = new Promise<void>((resolve, reject) => {
        const t = setTimeout(
          () => reject(new Error(`haproxy master did not log "Loading success." within ${o.startTimeoutMs ?? 5000} ms: ${masterOutput.slice(-2000)}`)),
          o.startTimeoutMs ?? 5000,
        );
        const check = (): void => {
          if (loadEvents > 0) {
            clearTimeout(t);
            if (/Loading success/.test(lastLoadLine)) resolve();
            else reject(new Error(`haproxy master failed to load: ${masterOutput.slice(-2000)}`));
          } else loadWaiters.push(check);
        };
        check();
      });
      await Promise.race([Promise.all([loaded, waitForPort(host, port, o.startTimeoutMs ?? 5000)]), failed]);
      const w = await pollNewWorkers(masterSocket!, [], o.startTimeoutMs ?? 5000);
      if (!w) throw new Error(`haproxy master CLI ${masterSocket} never listed a worker`);
      workers = w;
    } else {
      const argv = [HAPROXY_BIN, '-f', cfgPath, '-p', pidFile, '-D'];
      const r = await runCommand(argv, logPath, o.startTimeoutMs ?? 5000);
      if (r.exitCode !== 0) throw new Error(`haproxy failed to start (exit ${r.exitCode} ${r.error ?? ''}): ${r.output ?? ''}`);
      await waitForPort(host, port, o.startTimeoutMs ?? 5000);
    }
    if (statsSocket) {
      const end = Date.now() + 2000;
      while (!existsSync(statsSocket) && Date.now() < end) await sleep(5);
    }
  } catch (e) {
    await server.stop().catch(() => undefined);
    throw e;
  }
  return server;
}

/** Current worker PIDs in a master CLI "show proc" answer (not the "# old workers"). */
export function parseShowProcWorkers(text: string): number[] {
  const i = text.indexOf('# workers');
  if (i < 0) return [];
  const rest = text.slice(i + '# workers'.length);
  const j = rest.search(/^# /m);
  const section = j >= 0 ? rest.slice(0, j) : rest;
  return [...section.matchAll(/^(\d+)\s+worker\b/gm)].map((m) => Number(m[1]));
}

/** Poll the master CLI until it lists a current worker not in `old`; null on timeout.
 * Refused connections are expected while the master re-executes. */
async function pollNewWorkers(masterSocket: string, old: number[], timeoutMs: number): Promise<number[] | null> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    try {
      const w = parseShowProcWorkers(await haproxySocketCommand(masterSocket, 'show proc', 1000));
      if (w.length > 0 && w.some((p) => !old.includes(p))) return w;
    } catch {
      /* master busy re-executing */
    }
    if (performance.now() >= end) return null;
    await sleep(2);
  }
}

/** Send one command to a HAProxy stats or master socket and return the answer. */
export function haproxySocketCommand(socketPath: string, command: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(socketPath);
    let out = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer from ${socketPath} within ${timeoutMs} ms`));
    }, timeoutMs);
    s.on('data', (d) => (out += d.toString('utf8')));
    s.on('end', () => {
      clearTimeout(t);
      resolve(out);
    });
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    // Half-close after the command: the CLI answers and closes only once it sees EOF.
    s.end(`${command}\n`);
  });
}
