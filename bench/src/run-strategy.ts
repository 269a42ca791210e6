// One strategy's run, inside the network namespace the bench made for it: the
// seed's experiment, step by step.
//
//   1. nginx-light answering "pong" on 127.0.0.1:8001, HAProxy 2.6 on
//      127.0.0.1:16000 in front of it (the seed's ports: the namespace is ours)
//   2. the strategy's set-up (synhold setup, the seed's tc topology, a sysctl)
//   3. a short warm-up, not counted (it must not fail: the set-up broke nothing)
//   4. the load generator and the reload loop together; the load decides when
//      the run ends, then the loop is stopped
//   5. hold durations, the ab cross-check if asked, then everything undone, by
//      PID, in reverse order, whatever failed before
//
// Bounded: the load has a hard cap (plan.capMs), the loop stops with the load
// and has its own deadline, every command has a timeout.

import { readFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { startNginx, startHaproxy, CleanupStack, HAPROXY_BIN, type HaproxyServer } from './servers.js';
import { runLoad, loadResultToJson, type LoadResult } from './loadgen.js';
import { runReloadLoop, type ReloadLoopResult } from './reloader.js';
import { inNetns } from './netns.js';
import { exec } from './exec.js';
import { runAb } from './ab.js';
import { runWrk } from './load/wrk.js';
import { strategyFor, StrategyUnavailable } from './strategies/index.js';
import type { HoldSummary, PreparedStrategy } from './strategies/strategy.js';
import { attributeFailures, placeSlow, type Attribution, type SlowPlacement } from './attribution.js';
import { counterDeltas, readCounters } from './kernel-counters.js';
import { emitProgress, type ReloadSummary, type WorkerResult, type WorkerSpec } from './protocol.js';

/**
 * An ok request at least this slow is placed in its reload (attribution.ts placeSlow). Half the
 * first SYN retransmit (1 s): a request past it lost a packet, or waited for something as long.
 */
export const SLOW_MS = 500;

export const BACKEND_PORT = 8001;
export const FRONTEND_PORT = 16000;
const HOST = '127.0.0.1';

/** argv prefix running this checkout's synhold CLI. */
export function synholdArgv(): string[] {
  return [process.execPath, fileURLToPath(new URL('../../synhold.cjs', import.meta.url))];
}

async function haproxyVersion(): Promise<string | undefined> {
  const r = await exec([HAPROXY_BIN, '-v'], { timeoutMs: 10_000 });
  return /HAProxy version (\S+)/.exec(r.stdout)?.[1];
}

/** The lines of a failed reload's output that say why (errors first, then the last lines). */
export function failureLines(output: string, max = 600): string {
  // no stack frames: they say where, not why
  const lines = output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !/^at /.test(l));
  const errors = lines.filter((l) => /error|synhold|ALERT|fatal/i.test(l));
  const picked = [...new Set([...errors.slice(-4), ...lines.slice(-2)])];
  const text = picked.join(' | ');
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

function reloadSummary(loop: ReloadLoopResult, nominalIntervalMs: number): ReloadSummary {
  return {
    count: loop.count,
    failed: loop.failed,
    ratePerSec: loop.ratePerSec,
    elapsedMs: loop.elapsedMs,
    nominalIntervalMs,
    intervalMs: loop.intervalMs,
    durationMs: loop.durationMs,
    overruns: loop.overruns,
    stoppedBy: loop.stoppedBy,
    failures: loop.reloads
      .filter((r) => !r.ok)
      .slice(0, 5)
      .map((r) => `reload #${r.index}: ${r.hookError ?? r.error ?? `exit ${r.exitCode}`} ${failureLines(r.output ?? '')}`.trim()),
  };
}

export async function runStrategy(spec: WorkerSpec): Promise<WorkerResult> {
  const t0 = performance.now();
  const strategy = strategyFor(spec.strategy);
  const base = { strategy: spec.strategy, where: spec.where, kernel: release(), cpus: cpus().length, netns: spec.netns };
  const ev = { where: spec.where, strategy: spec.strategy };
  const notes: string[] = [];
  const result = (extra: Partial<WorkerResult>): WorkerResult => ({ ...base, notes, elapsedMs: performance.now() - t0, ...extra });

  // The bench binds the seed's fixed ports and rewrites lo's qdiscs: only ever
  // in a namespace of its own.
  if (!inNetns(spec.netns)) {
    return result({
      error: `refusing to run outside the namespace the bench created for it (${spec.netns}): the bench binds fixed ports and rewrites lo's qdiscs`,
    });
  }
  emitProgress(spec.progressFile, { t: 'start', ...ev, kernel: base.kernel, plan: spec.load, intervalMs: spec.intervalMs, reloads: strategy.reloads });
  // This process is the strategy's own: its environment is what the reload
  // commands (synhold protect ...) inherit too.
  if (spec.runDir) process.env.SYNHOLD_RUN_DIR = spec.runDir;
  const env: NodeJS.ProcessEnv = { ...process.env };

  const cl = new CleanupStack();
  let out: WorkerResult;
  let hv: string | undefined;
  try {
    hv = await haproxyVersion();
    emitProgress(spec.progressFile, { t: 'phase', ...ev, phase: 'servers' });
    const nginx = await startNginx({ host: HOST, port: BACKEND_PORT, workers: 1 });
    cl.add(() => nginx.stop());
    const hap: HaproxyServer = await startHaproxy({
      host: HOST,
      port: FRONTEND_PORT,
      backendHost: HOST,
      backendPort: BACKEND_PORT,
      mode: strategy.haproxyMode,
    });
    cl.add(() => hap.stop());

    emitProgress(spec.progressFile, { t: 'phase', ...ev, phase: 'set-up' });
    // StrategyUnavailable from here: reported as skipped, with its reason (below).
    const prepared: PreparedStrategy = await strategy.prepare({
      haproxy: hap,
      port: FRONTEND_PORT,
      synhold: synholdArgv(),
      env,
      where: spec.where,
      log: (l) => notes.push(l),
    });
    cl.add(() => prepared.cleanup());
    notes.push(...prepared.notes);

    emitProgress(spec.progressFile, { t: 'phase', ...ev, phase: 'warm-up' });
    const warm = await runLoad({
      host: HOST,
      port: FRONTEND_PORT,
      concurrency: Math.min(10, spec.load.concurrency),
      requests: spec.load.warmupRequests,
      requestTimeoutMs: spec.load.requestTimeoutMs,
      deadlineMs: 60_000,
    });
    if (warm.failed > 0) {
      throw new Error(`warm-up (no reloads) failed ${warm.failed} of ${warm.requests} requests: ${JSON.stringify(warm.details)}; the set-up broke the path`);
    }

    emitProgress(spec.progressFile, { t: 'phase', ...ev, phase: 'load' });
    const plan = spec.load;
    const stopLoad = new AbortController();
    const stopLoop = new AbortController();
    let reloadsDone = 0;
    const loopPromise: Promise<ReloadLoopResult> | undefined = strategy.reloads
      ? runReloadLoop({
          target: hap,
          intervalMs: spec.intervalMs,
          count: Math.ceil(plan.capMs / Math.max(1, spec.intervalMs)) + 1,
          deadlineMs: plan.capMs,
          signal: stopLoop.signal,
          ...(prepared.wrap ? { wrap: prepared.wrap } : {}),
          onReload: () => reloadsDone++,
        })
      : undefined;
    // The seed's full run wants N requests AND at least M reloads (and --quick
    // at least a few reloads even where one takes seconds, as in the kernel
    // lab): with minReloads the load runs on past its bound, up to capMs,
    // until both are reached.
    const needReloads = strategy.reloads && plan.minReloads !== undefined && plan.minReloads > 0;
    const boundReached = (p: { elapsedMs: number; requests: number }): boolean =>
      plan.requests !== undefined ? p.requests >= plan.requests : p.elapsedMs >= (plan.durationMs ?? plan.capMs);
    const runFor = needReloads ? plan.capMs : Math.min(plan.durationMs ?? plan.capMs, plan.capMs);
    let lastEmit = -Infinity;
    let load: LoadResult;
    const countersBefore = readCounters();
    try {
      load = await runLoad({
        host: HOST,
        port: FRONTEND_PORT,
        concurrency: plan.concurrency,
        durationMs: runFor,
        ...(plan.requests !== undefined && !needReloads ? { requests: plan.requests } : {}),
        deadlineMs: runFor + plan.requestTimeoutMs + 5000,
        requestTimeoutMs: plan.requestTimeoutMs,
        // failed and slow requests only, to charge each to its reload (attribution.ts)
        timeline: { limit: 200_000, failuresOnly: true, slowMs: SLOW_MS },
        signal: stopLoad.signal,
        progressIntervalMs: needReloads ? 100 : 500,
        onProgress: (p) => {
          if (p.elapsedMs - lastEmit >= 450) {
            lastEmit = p.elapsedMs;
            emitProgress(spec.progressFile, { t: 'load', ...ev, elapsedMs: p.elapsedMs, requests: p.requests, failed: p.failed, reloads: reloadsDone });
          }
          if (needReloads && boundReached(p) && reloadsDone >= plan.minReloads!) stopLoad.abort();
        },
      });
    } finally {
      stopLoop.abort();
    }
    const loop = loopPromise ? await loopPromise : undefined;
    // After the loop: a reload's last packets are the load's too.
    const counters = counterDeltas(countersBefore, readCounters());
    const loadJson = loadResultToJson(load);
    if (load.stoppedBy === 'deadline' || (load.stoppedBy === 'duration' && (needReloads || plan.durationMs === undefined))) {
      notes.push(
        `the load hit its time cap (${Math.round(plan.capMs / 1000)} s) before its target (${plan.requests !== undefined ? `${plan.requests} requests` : `${(plan.durationMs ?? 0) / 1000} s`}${needReloads ? `, ${plan.minReloads} reloads` : ''})`,
      );
    }

    let hold: HoldSummary | undefined;
    if (prepared.holds && loop) {
      const reloadLog = readFileSync(hap.logPath, 'utf8');
      hold = prepared.holds({ loop, reloadLog });
    }
    let attribution: Attribution | undefined;
    if (loop && load.failed > 0) {
      // One hold line per reload, in order, unless a reload failed before protect printed its line.
      const reasons = hold?.reasonByReload?.length === loop.count ? hold.reasonByReload : undefined;
      attribution = attributeFailures(
        (load.timeline ?? []).filter((t) => t.outcome !== 'ok').map((t) => load.startedAt + t.startMs),
        loop.reloads.map((r, i) => ({ startedAt: r.startedAt, ...(reasons ? { reason: reasons[i]! } : {}) })),
      );
      if (hold?.reasonByReload && !reasons)
        notes.push(`${hold.reasonByReload.length} hold lines for ${loop.count} reloads: failures not charged to release reasons`);
    }
    const slowOnes = (load.timeline ?? []).filter((t) => t.outcome === 'ok').map((t) => ({ startedAt: load.startedAt + t.startMs, latencyMs: t.latencyMs }));
    let slow: SlowPlacement | undefined;
    if (slowOnes.length > 0) {
      // Hold windows only when every reload has one: otherwise a phase could be charged to the wrong hold.
      const windows = hold?.windows?.length === loop?.count ? hold?.windows : undefined;
      slow = placeSlow(slowOnes, loop?.reloads ?? [], windows, SLOW_MS);
      if (hold?.windows && !windows) notes.push(`${hold.windows.length} hold windows for ${loop?.count ?? 0} reloads: slow requests not placed in their holds`);
    }
    if (hold) {
      delete hold.reasonByReload;
      delete hold.windows;
    }
    let ab;
    if (spec.abRequests) {
      emitProgress(spec.progressFile, { t: 'phase', ...ev, phase: 'ab cross-check' });
      ab = await runAb(HOST, FRONTEND_PORT, spec.abRequests, plan.concurrency, 10 * 60_000);
    }
    let wrk;
    if (spec.wrkSeconds) {
      emitProgress(spec.progressFile, { t: 'phase', ...ev, phase: 'wrk cross-check' });
      wrk = await runWrk(HOST, FRONTEND_PORT, { threads: 1, connections: plan.concurrency, durationS: spec.wrkSeconds });
    }
    if (loop && loop.count > 0 && loop.failed === loop.count) {
      throw new Error(`every reload failed (${loop.count}): ${reloadSummary(loop, spec.intervalMs).failures[0] ?? '?'}`);
    }
    out = result({
      load: loadJson,
      ...(loop ? { reloads: reloadSummary(loop, spec.intervalMs) } : {}),
      ...(hold ? { hold } : {}),
      ...(attribution ? { attribution } : {}),
      ...(slow ? { slow } : {}),
      counters,
      ...(ab ? { ab } : {}),
      ...(wrk ? { wrk } : {}),
      ...(hv ? { haproxyVersion: hv } : {}),
    });
  } catch (e) {
    const version = hv ? { haproxyVersion: hv } : {};
    out =
      e instanceof StrategyUnavailable ? result({ skipped: e.message, ...version }) : result({ error: e instanceof Error ? e.message : String(e), ...version });
  } finally {
    emitProgress(spec.progressFile, { t: 'phase', ...ev, phase: 'clean-up' });
    const errs = await cl.run();
    if (errs.length > 0) {
      const msg = `clean-up: ${errs.map((e) => e.message).join('; ')}`;
      // out is always set here unless a cleanup threw past everything
      out ??= result({ error: msg });
      if (out.error) out.error += `; ${msg}`;
      else out.error = msg;
    }
  }
  out.elapsedMs = performance.now() - t0;
  emitProgress(spec.progressFile, {
    t: 'done',
    ...ev,
    ...(out.skipped ? { skipped: out.skipped } : {}),
    ...(out.error ? { error: out.error } : {}),
    ...(out.load ? { requests: out.load.requests, failed: out.load.failed } : {}),
    ...(out.reloads ? { reloads: out.reloads.count } : {}),
  });
  return out;
}
