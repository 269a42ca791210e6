/**
 * The seed's experiment as one program, for the reload tests: nginx answering
 * "pong", HAProxy in front on 16000, a new TCP connection per request, and
 * HAProxy reloaded with `haproxy -f CFG -p PIDFILE -D -sf $(cat PIDFILE)` every
 * interval, optionally wrapped in `synhold protect --`. Runs in the current
 * network namespace (the test starts it under `ip netns exec`); prints one JSON
 * document. Everything it starts is stopped by PID before it exits.
 *
 *   node reload-experiment.js '{"protect":true,"reloads":200,"intervalMs":100,"concurrency":20}'
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { stateDir } from '../../src/protect/state.js';
import { fileURLToPath } from 'node:url';
import { installSignalCleanup, startHaproxy, startNginx, type HaproxyServer, type NginxServer } from '../../bench/src/servers.js';
import { runReloadLoop } from '../../bench/src/reloader.js';
import { summarizeMs } from '../../bench/src/histogram.js';
import { shQuote } from '../../bench/src/lab/uml.js';
import { withoutSf } from '../../bench/src/strategies/synhold-hold.js';
import { CLI, synhold } from './cli.js';
import { closedLoad, runAsScript } from './experiment-script.js';

export interface ExperimentOptions {
  /** Wrap each reload in `synhold protect` (after `synhold setup --port 16000 [setupArgs]`). */
  protect: boolean;
  setupArgs?: string[];
  protectArgs?: string[];
  reloads: number;
  intervalMs: number;
  concurrency: number;
  /** Independent reload loops at once (each doing reloads/loops): concurrent protects. */
  loops?: number;
  /** A bound on everything, ms. */
  deadlineMs?: number;
  /** With reloads 0: how long the no-reload baseline load runs, ms. */
  durationMs?: number;
  /** A request's deadline, connect to response, ms (default 10 s). */
  requestTimeoutMs?: number;
  /** How long one reload (protect included, lock wait and all) may take before it is killed and counted failed, ms (default 30 s). */
  reloadTimeoutMs?: number;
  /** Run `synhold daemon` during the experiment, so protect holds through it instead of forking a holder. */
  daemon?: boolean;
  /**
   * Run the reload as a shell line that reads the pidfile when it runs, as an
   * operator's `haproxy ... -sf $(cat PIDFILE)` does: under protect that is
   * inside the hold, so concurrent reloads each replace the previous one's
   * process. (Without it, the -sf pids are read before protect takes the lock,
   * and a reload that waited for another names pids that are already gone.)
   */
  shellReload?: boolean;
  /**
   * Reload without -sf (the new HAProxy starts beside the old one), for `protect --stop-old`,
   * which stops the old one itself (put it in protectArgs).
   */
  withoutSf?: boolean;
}

export interface ExperimentResult {
  requests: number;
  failed: number;
  outcomes: Record<string, number>;
  details: Record<string, number>;
  latencyMs: ReturnType<typeof summarizeMs>;
  reloads: number;
  reloadFailures: number;
  reloadRatePerSec: number;
  reloadMs: { p50: number; max: number };
  /** From protect's summary lines: each hold's duration, and why it ended. */
  holds: { ms: number; reason: string; released: number; dropped: number }[];
  /** Wall time of each reload command as run (wrapped in protect when protecting), ms. */
  reloadDurationsMs: number[];
  synholdStatus?: unknown;
}

/** Runs the experiment in its own process inside a test namespace (where HAProxy and nginx must live). */
export function runExperimentIn(netns: string, o: ExperimentOptions, timeoutMs = 25 * 60_000): ExperimentResult {
  const r = spawnSync('ip', ['netns', 'exec', netns, process.execPath, fileURLToPath(import.meta.url), JSON.stringify(o)], {
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  if (r.status !== 0) throw new Error(`experiment failed (${r.status ?? r.signal}): ${r.stderr}`);
  return JSON.parse(r.stdout) as ExperimentResult;
}

/** runExperimentIn without blocking this process (for tests that do other things meanwhile). */
export function runExperimentInAsync(netns: string, o: ExperimentOptions, timeoutMs = 25 * 60_000): Promise<ExperimentResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, fileURLToPath(import.meta.url), JSON.stringify(o)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      if (code !== 0) reject(new Error(`experiment failed (${code ?? signal}): ${err}`));
      else resolve(JSON.parse(out) as ExperimentResult);
    });
  });
}

/** One line for a test's diagnostics. */
export function describeResult(r: ExperimentResult): string {
  const holds = r.holds.map((h) => h.ms).sort((a, b) => a - b);
  const bySockets = r.holds.filter((h) => h.reason.startsWith('port ')).length;
  return (
    `${r.requests} requests, ${r.failed} failed ${JSON.stringify(r.details)}, ${r.reloads} reloads at ${r.reloadRatePerSec.toFixed(2)}/s ` +
    `(reload p50 ${r.reloadMs.p50.toFixed(0)} ms), latency p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} max ${r.latencyMs.max} ms` +
    (holds.length ? `, hold p50 ${holds[holds.length >> 1]} max ${holds.at(-1)} ms, ${bySockets}/${holds.length} released by the socket rule` : '')
  );
}

const HELD = /^synhold: held ([\d.]+) ms \((\d+) SYNs released, (\d+) dropped; (.*?)\); command/;

export async function runExperiment(o: ExperimentOptions): Promise<ExperimentResult> {
  installSignalCleanup();
  const deadline = Date.now() + (o.deadlineMs ?? 20 * 60_000);
  let nginx: NginxServer | undefined;
  let hap: HaproxyServer | undefined;
  let daemon: ChildProcess | undefined;
  try {
    nginx = await startNginx({ workers: 1 });
    hap = await startHaproxy({ backendPort: nginx.port, port: 16000, reloadTimeoutMs: o.reloadTimeoutMs });
    if (o.protect) {
      const s = synhold(['setup', '--port', '16000', ...(o.setupArgs ?? [])]);
      if (s.status !== 0) throw new Error(`synhold setup failed: ${s.stderr}`);
    }
    if (o.daemon) {
      daemon = spawn(process.execPath, [CLI, 'daemon'], { stdio: 'ignore' });
      const sock = join(stateDir(), 'holder.sock');
      for (let i = 0; i < 1000 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 10));
      if (!existsSync(sock)) throw new Error('synhold daemon did not start');
    }
    const abort = new AbortController();
    const load = closedLoad({ port: 16000, concurrency: o.concurrency, endsAt: deadline, requestTimeoutMs: o.requestTimeoutMs, signal: abort.signal });
    if (o.reloads === 0) await new Promise((r) => setTimeout(r, o.durationMs ?? 10_000));
    const loops = o.reloads === 0 ? 0 : (o.loops ?? 1);
    // The reload as run: the pidfile read at run time (shellReload), wrapped in protect.
    const reloadCmd = (argv: string[]): string[] => {
      if (o.withoutSf) return withoutSf(argv);
      if (!o.shellReload) return argv;
      const sf = argv.indexOf('-sf');
      const head = (sf < 0 ? argv : argv.slice(0, sf)).map(shQuote).join(' ');
      return ['sh', '-c', `exec ${head} -sf $(cat ${shQuote(hap!.pidFile)})`];
    };
    const protectPrefix = o.protect ? [process.execPath, CLI, 'protect', ...(o.protectArgs ?? []), '--'] : [];
    const wrap = o.protect || o.shellReload || o.withoutSf ? (argv: string[]) => [...protectPrefix, ...reloadCmd(argv)] : undefined;
    const results = await Promise.all(
      Array.from({ length: loops }, () =>
        runReloadLoop({
          target: hap!,
          intervalMs: o.intervalMs,
          count: Math.ceil(o.reloads / loops),
          deadlineMs: Math.max(1000, deadline - Date.now()),
          ...(wrap ? { wrap } : {}),
        }),
      ),
    );
    abort.abort();
    const l = await load;
    const all = results.flatMap((r) => r.reloads);
    const durations = all.map((r) => r.durationMs).sort((a, b) => a - b);
    const holds = readFileSync(hap.logPath, 'utf8')
      .split('\n')
      .map((line) => HELD.exec(line))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ ms: Number(m[1]), released: Number(m[2]), dropped: Number(m[3]), reason: m[4]! }));
    const out: ExperimentResult = {
      requests: l.requests,
      failed: l.failed,
      outcomes: l.outcomes,
      details: l.details,
      latencyMs: summarizeMs(l.latency),
      reloads: all.length,
      reloadFailures: all.filter((r) => !r.ok).length,
      reloadRatePerSec: results.reduce((a, r) => a + r.ratePerSec, 0),
      reloadMs: { p50: durations[Math.floor(durations.length / 2)] ?? 0, max: durations.at(-1) ?? 0 },
      holds,
      reloadDurationsMs: all.map((r) => Math.round(r.durationMs * 10) / 10),
    };
    if (o.protect) out.synholdStatus = JSON.parse(synhold(['--json', 'status']).stdout);
    return out;
  } finally {
    if (daemon) {
      daemon.kill('SIGTERM');
      await new Promise((r) => daemon!.once('exit', r));
    }
    if (o.protect) synhold(['teardown']);
    await hap?.stop().catch(() => undefined);
    await nginx?.stop().catch(() => undefined);
  }
}

runAsScript(import.meta.url, runExperiment);
