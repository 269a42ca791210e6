/**
 * HAProxy in master-worker mode (`haproxy -W -S MASTER_SOCK -f CFG -p PIDFILE`, the
 * master in the foreground) in front of nginx "pong", reloaded N times under load
 * with SIGUSR2 to the master, bare or as
 * `synhold protect --release-on swap --report FILE -- kill -USR2 MASTERPID`
 * (or `--release-on sockets`, protect's default rule).
 * Runs in the current network namespace (the test starts it under `ip netns exec`);
 * prints one JSON document. Everything it starts is stopped by PID before it exits.
 *
 * Besides the load generator's own count of failed requests, the oracles are not
 * synhold's: `ab -r` as a second client, `ss -ltnp` after every reload (which pids
 * hold the listener, against the master CLI's `show proc`), and the namespace's
 * /proc/net/netstat and /proc/net/snmp (listen drops and overflows, request queue
 * drops, resets) before and after.
 *
 * With `socketTransfer: false` the master runs without the socket hand-over (see
 * NO_TRANSFER_WRAPPER): each new worker binds a listener of its own beside the old
 * worker's, and the old worker closes its copy when it stops.
 *
 *   node master-worker-experiment.js '{"protect":true,"reloads":40,"concurrency":50}'
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { installSignalCleanup, startHaproxy, startNginx, type HaproxyServer, type NginxServer } from '../../bench/src/servers.js';
import { closedLoad, runAsScript } from './experiment-script.js';
import { summarizeMs } from '../../bench/src/histogram.js';
import { CLI, synhold } from './cli.js';

export interface MasterWorkerOptions {
  /** Wrap each reload in `synhold protect --release-on RULE` (after `synhold setup --port 16000`). */
  protect: boolean;
  /** protect's release rule (default swap; sockets is protect's default rule). */
  releaseOn?: 'swap' | 'sockets';
  /** Extra protect arguments (before --). */
  protectArgs?: string[];
  reloads: number;
  /** Start to start, ms; a reload is over when the master CLI lists its new worker. */
  intervalMs: number;
  concurrency: number;
  /** ab's concurrency beside the load generator (0: no ab). */
  abConcurrency?: number;
  /** A bound on everything, ms. */
  deadlineMs?: number;
  /** Extra `synhold setup` arguments (protected runs), e.g. `--migrate-req off`. */
  setupArgs?: string[];
  /** false: run HAProxy with the socket hand-over turned off (`-x /dev/null`, NO_TRANSFER_WRAPPER). Default true. */
  socketTransfer?: boolean;
}

/**
 * How to turn the master-worker socket hand-over off, and why a wrapper does it here.
 *
 * HAProxy's own switch is `-x /dev/null` on the master's command line (doc/management.txt, `-x`:
 * "If you want to disable this, you can pass -x /dev/null"; src/haproxy.c mworker_reexec, `x_off`,
 * from upstream commit 2ab42dddc "BUG/MINOR: mworker: reintroduce way to disable seamless reload
 * with -x /dev/null", 3.0-dev9, "Must be backported as far as 2.6"). Debian 12's 2.6.12 predates
 * it: its mworker_reexec drops every -x of the old command line (copy_argv: "this option and its
 * parameter are ignored") and always prepends `-x sockpair@FD` of the current worker, whose
 * socketpair CLI always has ACCESS_FD_LISTENERS (src/cli.c mworker_cli_sockpair_new) and there is
 * no config keyword to take it away. Measured here: `haproxy -W -S SOCK -f CFG -x /dev/null`
 * reloaded twice by SIGUSR2 kept one listener inode throughout, and `ps` showed the new worker
 * started with `-sf OLD -x sockpair@4`.
 *
 * The master re-executes itself by `execvp(argv[0], ...)`, so a wrapper started as argv[0] runs
 * on every reload: it rewrites each `-x ARG` to `-x /dev/null` (adding one if there is none) and
 * execs the real binary with argv[0] kept. The new worker then gets the very argv a fixed HAProxy
 * builds (`-sf OLD -x /dev/null ...`), and 2.6.12 honours it: sock_get_old_sockets is skipped
 * when the path is "/dev/null" (src/haproxy.c), so the new process binds its own listener
 * (SO_REUSEPORT) beside the old worker's.
 */
export const NO_TRANSFER_WRAPPER = `#!/bin/bash
args=() x=
while [ $# -gt 0 ]; do
  if [ "$1" = -x ] && [ $# -ge 2 ]; then args+=(-x /dev/null); x=1; shift 2; continue; fi
  args+=("$1"); shift
done
[ -n "$x" ] || args+=(-x /dev/null)
exec -a "$0" /usr/sbin/haproxy "\${args[@]}"
`;

/** The kernel's counters that a lost or refused connection moves (TcpExt and Tcp). */
export const COUNTERS = [
  'TcpExt.ListenDrops',
  'TcpExt.ListenOverflows',
  'TcpExt.TCPReqQFullDrop',
  'TcpExt.TCPReqQFullDoCookies',
  'TcpExt.TCPAbortOnData',
  'TcpExt.TCPAbortOnClose',
  'TcpExt.TCPSpuriousRtxHostQueues',
  'Tcp.AttemptFails',
  'Tcp.EstabResets',
  'Tcp.OutRsts',
  'Tcp.ActiveOpens',
] as const;

export interface ReloadSeen {
  ok: boolean;
  error?: string;
  /** signal (or protect) until the master logged "Loading success.", ms */
  loadedMs: number;
  /** until the master CLI listed the new worker, ms */
  readyMs: number;
  oldWorkers: number[];
  newWorkers: number[];
  /**
   * `ss -ltnpe` after the reload: the pids holding the listener on 16000, and its inode(s), once
   * they are the new worker's alone (polled up to 3 s: the new worker takes the socket over
   * during its start, after the master lists it), and how long after "ready" that took.
   */
  ssPids: number[];
  ssInodes: number[];
  ssMs: number;
  /** /proc/PID/cmdline of the new worker (how the master started it: `-x sockpair@N` or `-x /dev/null`). */
  newWorkerArgv: string[];
}

export interface ProtectRun {
  exitCode: number;
  holdMs: number;
  released: number;
  drops: number;
  releaseCause: string;
  releaseReason: string;
  releasedBy: string;
  timeline: { newListenerMs?: number; oldGoneMs?: number; releaseSentMs: number; handover?: { ms: number; from: number[]; to: number[] } };
}

export interface MasterWorkerResult {
  requests: number;
  failed: number;
  outcomes: Record<string, number>;
  details: Record<string, number>;
  latencyMs: ReturnType<typeof summarizeMs>;
  reloads: ReloadSeen[];
  elapsedMs: number;
  /** protect's --report lines, one per reload (protected runs). */
  protects: ProtectRun[];
  /** ab -r beside the load generator. */
  ab?: { complete: number; failed: number; nonOk: number; errors: string[]; output?: string };
  /** /proc/net/netstat + /proc/net/snmp deltas over the reloads, COUNTERS only. */
  netstat: Record<string, number>;
  masterPid: number;
  haproxyVersion: string;
  socketTransfer: boolean;
  /** net.ipv4.tcp_migrate_req in the namespace during the reloads (setup turns it on unless told not to). */
  migrateReq: number;
}

/** Runs the experiment in its own process inside a test namespace. */
export function runMasterWorkerIn(netns: string, o: MasterWorkerOptions, timeoutMs = 5 * 60_000): MasterWorkerResult {
  const r = spawnSync('ip', ['netns', 'exec', netns, process.execPath, fileURLToPath(import.meta.url), JSON.stringify(o)], {
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  if (r.status !== 0) throw new Error(`master-worker experiment failed (${r.status ?? r.signal}): ${r.stderr}`);
  return JSON.parse(r.stdout) as MasterWorkerResult;
}

/** "TcpExt: A B ...\nTcpExt: 1 2 ..." pairs, this namespace's (the reader's) counters. */
export function readCounters(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const file of ['/proc/net/netstat', '/proc/net/snmp']) {
    const lines = readFileSync(file, 'utf8').split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i]!.split(/\s+/).filter(Boolean);
      const values = lines[i + 1]!.split(/\s+/).filter(Boolean);
      const group = names[0]!.replace(/:$/, '');
      for (let j = 1; j < names.length; j++) out[`${group}.${names[j]}`] = Number(values[j]);
    }
  }
  return out;
}

/** `ss -Hltnpe sport = :PORT`: who holds the listener(s), and their inodes. */
export function ssListeners(port: number): { pids: number[]; inodes: number[] } {
  const r = spawnSync('ss', ['-Hltnpe', `sport = :${port}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ss failed: ${r.stderr}`);
  const pids = [...r.stdout.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1]));
  const inodes = [...r.stdout.matchAll(/ino:(\d+)/g)].map((m) => Number(m[1]));
  return { pids: [...new Set(pids)].sort((a, b) => a - b), inodes: [...new Set(inodes)] };
}

/** ab -r (keep going on socket errors) for at most `seconds`, at `concurrency`; SIGINT makes it print its results and stop. */
function startAb(concurrency: number, seconds: number): { pid: number; done: Promise<NonNullable<MasterWorkerResult['ab']>> } {
  // -t alone caps ab at 50000 requests; -n after it lifts that. -s: a request's timeout.
  const child = spawn('ab', ['-r', '-q', '-s', '10', '-t', String(seconds), '-n', '100000000', '-c', String(concurrency), 'http://127.0.0.1:16000/'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const done = new Promise<NonNullable<MasterWorkerResult['ab']>>((resolve) =>
    child.on('close', () => {
      const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? NaN);
      resolve({
        complete: num(/^Complete requests:\s+(\d+)/m),
        failed: num(/^Failed requests:\s+(\d+)/m),
        nonOk: /^Non-2xx responses:\s+(\d+)/m.test(out) ? num(/^Non-2xx responses:\s+(\d+)/m) : 0,
        errors: [...out.matchAll(/^(apr_\S+.*)$/gm)].map((m) => m[1]!).slice(0, 20),
        ...(/^Complete requests/m.test(out) ? {} : { output: out.slice(-2000) }),
      });
    }),
  );
  return { pid: child.pid!, done };
}

export async function runMasterWorker(o: MasterWorkerOptions): Promise<MasterWorkerResult> {
  installSignalCleanup();
  const t0 = Date.now();
  const deadline = t0 + (o.deadlineMs ?? 150_000);
  const dir = mkdtempSync(join(tmpdir(), 'synhold-mw-'));
  const report = join(dir, 'report.jsonl');
  let nginx: NginxServer | undefined;
  let hap: HaproxyServer | undefined;
  let abPid: number | undefined;
  try {
    nginx = await startNginx({ workers: 1 });
    const socketTransfer = o.socketTransfer ?? true;
    let bin: string | undefined;
    if (!socketTransfer) {
      bin = join(dir, 'haproxy');
      writeFileSync(bin, NO_TRANSFER_WRAPPER);
      chmodSync(bin, 0o755);
    }
    hap = await startHaproxy({ backendPort: nginx.port, port: 16000, mode: 'master-worker', reloadTimeoutMs: 20_000, ...(bin ? { bin } : {}) });
    const masterPid = hap.currentPids()[0];
    if (masterPid === undefined) throw new Error('no master pid in the pidfile');
    if (o.protect) {
      const s = synhold(['setup', '--port', '16000', ...(o.setupArgs ?? [])]);
      if (s.status !== 0) throw new Error(`synhold setup failed: ${s.stderr}`);
    }
    const migrateReq = Number(readFileSync('/proc/sys/net/ipv4/tcp_migrate_req', 'utf8').trim());
    const before = readCounters();
    const abort = new AbortController();
    const load = closedLoad({ port: 16000, concurrency: o.concurrency, endsAt: deadline, signal: abort.signal });
    // ab runs until the reloads are done (SIGINT below); its own -t bounds it by the deadline.
    const ab = o.abConcurrency ? startAb(o.abConcurrency, Math.max(5, Math.ceil((deadline - Date.now()) / 1000))) : undefined;
    abPid = ab?.pid;
    await sleep(500); // load under way before the first reload
    const kill = ['kill', '-USR2', String(masterPid)];
    const argv = o.protect
      ? [process.execPath, CLI, 'protect', '--release-on', o.releaseOn ?? 'swap', '--report', report, ...(o.protectArgs ?? []), '--', ...kill]
      : kill;
    const reloads: ReloadSeen[] = [];
    for (let i = 0; i < o.reloads && Date.now() < deadline; i++) {
      const start = Date.now();
      const r = await hap.reload({ argv });
      const ssStart = Date.now();
      let ss = ssListeners(16000);
      while (Date.now() - ssStart < 3000 && (ss.pids.length !== 1 || ss.pids[0] !== r.newPids[0])) {
        await sleep(5);
        ss = ssListeners(16000);
      }
      let newWorkerArgv: string[] = [];
      try {
        newWorkerArgv = readFileSync(`/proc/${r.newPids[0]}/cmdline`, 'utf8').split('\0').filter(Boolean);
      } catch {
        /* already gone: the assertions say so */
      }
      reloads.push({
        ok: r.ok,
        ...(r.error || !r.ok ? { error: `${r.error ?? ''} ${r.output ?? ''}`.trim().slice(-500) } : {}),
        loadedMs: Math.round(r.durationMs * 10) / 10,
        readyMs: Math.round((r.readyMs ?? 0) * 10) / 10,
        oldWorkers: r.oldPids,
        newWorkers: r.newPids,
        ssPids: ss.pids,
        ssInodes: ss.inodes,
        ssMs: Date.now() - ssStart,
        newWorkerArgv,
      });
      const wait = start + o.intervalMs - Date.now();
      if (wait > 0) await sleep(wait);
    }
    const elapsedMs = Date.now() - t0;
    await sleep(300); // connections made during the last reload complete
    // ab prints what it counted on SIGINT (its output_results handler) and exits.
    if (ab) process.kill(ab.pid, 'SIGINT');
    const abResult = ab ? await Promise.race([ab.done, sleep(5000).then(() => undefined)]) : undefined;
    if (abResult) abPid = undefined;
    abort.abort();
    const l = await load;
    const after = readCounters();
    const netstat = Object.fromEntries(COUNTERS.map((k) => [k, (after[k] ?? 0) - (before[k] ?? 0)]));
    let protects: ProtectRun[] = [];
    try {
      protects = readFileSync(report, 'utf8')
        .split('\n')
        .filter((x) => x.trim())
        .map((x) => JSON.parse(x) as ProtectRun);
    } catch {
      /* unprotected: no report */
    }
    const version = spawnSync('/usr/sbin/haproxy', ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? '';
    return {
      requests: l.requests,
      failed: l.failed,
      outcomes: l.outcomes,
      details: l.details,
      latencyMs: summarizeMs(l.latency),
      reloads,
      elapsedMs,
      protects,
      ...(abResult ? { ab: abResult } : {}),
      netstat,
      masterPid,
      haproxyVersion: version,
      socketTransfer,
      migrateReq,
    };
  } finally {
    if (abPid !== undefined) {
      try {
        process.kill(abPid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    if (o.protect) synhold(['teardown']);
    await hap?.stop().catch(() => undefined);
    await nginx?.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

runAsScript(import.meta.url, runMasterWorker);
