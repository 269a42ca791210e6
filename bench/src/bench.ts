// `synhold bench`: decide where each strategy runs, run them, and turn their
// results into the table, the JSON document, and the figures.
//
// Where a strategy runs:
//   - on this machine's kernel, in a namespace of its own, if the kernel has
//     what it needs (asked of the kernel with tc in a scratch namespace);
//   - otherwise (sch_plug, sch_prio) in the kernel lab, User-Mode Linux, in a
//     namespace created there; a baseline and `none` then run in the lab too,
//     because one slow CPU with slow system calls is another machine: numbers
//     compare within one kernel only, and the report keeps them apart;
//   - nowhere, with the reason, if neither works. Never silently.
//
// Every group runs one strategy at a time (the machine has 2 CPUs; two runs at
// once would measure each other), host first, then the lab.

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { labAvailable, labKernel, runInLab } from './lab/uml.js';
import { decodeHistogram, newLatencyHistogram, summarizeMs } from './histogram.js';
import { FAILURE_OUTCOMES } from './loadgen.js';
import { stats } from './reloader.js';
import { NGINX_BIN, HAPROXY_BIN } from './servers.js';
import { benchNetnsName, probeKernelFeatures, type FeatureProbe } from './netns.js';
import { runGroup, readGroupResults, WORKER_OVERHEAD_MS } from './group.js';
import { FileTail, type ProgressView } from './progress.js';
import { strategyFor, sortStrategies } from './strategies/index.js';
import type { KernelFeature, StrategyName } from './strategies/strategy.js';
import { DEFAULT_INTERVAL_MS, REQUESTS_CAP_MS, type BenchOptions } from './options.js';
import type { GroupSpec, WorkerResult, WorkerSpec, Where } from './protocol.js';
import { writeJsonFile } from './protocol.js';
import { fmtMs, renderKernelTables, writeReport, type BenchJson, type StrategyReport, type WrittenReport } from './report.js';
import type { AbResult } from './ab.js';
import type { WrkResult } from './load/wrk.js';
import type { Attribution, SlowPlacement } from './attribution.js';

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const LAB_MAIN = fileURLToPath(new URL('./lab-main.js', import.meta.url));

export interface Placement {
  host: StrategyName[];
  lab: StrategyName[];
  /** strategy -> why it cannot run anywhere */
  skipped: Partial<Record<StrategyName, string>>;
  /** strategy -> why it runs in the lab */
  why: Partial<Record<StrategyName, string>>;
}

/**
 * Pure placement rule (tested on its own): strategies whose kernel needs the
 * host meets run on the host; the others in the lab when it is available.
 * Each group that runs anything gets a baseline; the lab group also `none`.
 */
export function placeStrategies(requested: StrategyName[], features: Record<KernelFeature, FeatureProbe>, lab: { ok: boolean; reason?: string }): Placement {
  const p: Placement = { host: [], lab: [], skipped: {}, why: {} };
  for (const name of sortStrategies(requested)) {
    const missing = strategyFor(name).kernelNeeds.filter((f) => !features[f].ok);
    if (missing.length === 0) p.host.push(name);
    else {
      const why = missing.map((f) => features[f].detail).join('; ');
      if (lab.ok) {
        p.lab.push(name);
        p.why[name] = `needs ${missing.join(' and ')}`;
      } else p.skipped[name] = `needs ${missing.join(' and ')}, which this kernel lacks (${why}), and the kernel lab is unavailable: ${lab.reason ?? '?'}`;
    }
  }
  if (p.host.length > 0) p.host = sortStrategies(['baseline', ...p.host]);
  if (p.lab.length > 0) p.lab = sortStrategies(['baseline', 'none', ...p.lab]);
  return p;
}

/** "plug needs sch_plug, plug-spawn needs sch_plug and sch_prio, which this kernel lacks (tc: ...)" */
export function labReason(p: Placement, features: Record<KernelFeature, FeatureProbe>): string {
  const names = p.lab.filter((s) => p.why[s]);
  const lacking = (Object.keys(features) as KernelFeature[]).filter((f) => !features[f].ok);
  return `${names.map((s) => `${s} ${p.why[s]}`).join(', ')}, which this machine's kernel lacks (${lacking.map((f) => features[f].detail).join('; ')})`;
}

/** A request's deadline in the kernel lab: protect's --max-hold there (LAB_MAX_HOLD). */
export const LAB_REQUEST_TIMEOUT_MS = 30_000;

/**
 * Which bound applies to a strategy (minReloads only where the run reloads at the common interval).
 * A reference row (one not asked for: the baseline, the lab's `none`) takes --reference-requests
 * when given, and no minimum of reloads: it is there for its latencies and failure rate.
 */
export function workerLoadPlan(o: BenchOptions, name: StrategyName): WorkerSpec['load'] {
  const s = strategyFor(name);
  if (o.referenceRequests !== undefined && !o.strategies.includes(name)) {
    return {
      concurrency: o.concurrency,
      capMs: REQUESTS_CAP_MS,
      requestTimeoutMs: o.requestTimeoutMs,
      warmupRequests: o.warmupRequests,
      requests: o.referenceRequests,
    };
  }
  const ownInterval = o.intervalMs === undefined && s.defaultIntervalMs !== undefined;
  return {
    concurrency: o.concurrency,
    capMs: o.capMs,
    requestTimeoutMs: o.requestTimeoutMs,
    warmupRequests: o.warmupRequests,
    ...(o.durationMs !== undefined ? { durationMs: o.durationMs } : {}),
    ...(o.requests !== undefined ? { requests: o.requests } : {}),
    ...(o.minReloads !== undefined && s.reloads && !ownInterval ? { minReloads: o.minReloads } : {}),
  };
}

function groupSpec(o: BenchOptions, where: Where, names: StrategyName[], workDir: string, abOn: StrategyName | undefined): GroupSpec {
  const progressFile = join(workDir, `progress-${where}.jsonl`);
  return {
    where,
    workDir,
    progressFile,
    workers: names.map((name) => {
      const w: WorkerSpec = {
        strategy: name,
        where,
        intervalMs: o.intervalMs ?? strategyFor(name).defaultIntervalMs ?? DEFAULT_INTERVAL_MS,
        load: workerLoadPlan(o, name),
        progressFile,
        resultFile: join(workDir, `result-${where}-${name}.json`),
        netns: benchNetnsName(where, name),
      };
      // synhold's state on the host goes into the work dir (removed with it),
      // never next to a real set-up's in /run/synhold. In the lab, /run is the
      // guest's own tmpfs already.
      if (where === 'host') w.runDir = join(workDir, `run-${name}`);
      // In the lab a held request may wait as long as a protected reload takes there
      // (seconds, up to protect's --max-hold): its deadline is that bound, so the lab's
      // failures are resets and refusals, not its slowness.
      else w.load.requestTimeoutMs = Math.max(w.load.requestTimeoutMs, LAB_REQUEST_TIMEOUT_MS);
      if (abOn === name && o.abRequests > 0) {
        w.abRequests = o.abRequests;
        w.wrkSeconds = o.wrkSeconds;
      }
      return w;
    }),
  };
}

/** A WorkerResult as a report row. */
export function reportFromResult(r: WorkerResult, kernelLabel: string): StrategyReport {
  const base = { where: r.where, kernel: r.kernel, label: `${r.strategy} (${kernelLabel})`, notes: r.notes };
  const z = stats([]);
  if (r.skipped !== undefined || r.error !== undefined || !r.load) {
    const reason = r.skipped ?? (r.error !== undefined ? `failed to run: ${r.error}` : 'no load result');
    return {
      name: r.strategy,
      skipped: reason,
      ...(r.error !== undefined ? { error: r.error } : {}),
      ...(r.strategy === 'baseline' ? { baseline: true } : {}),
      requests: 0,
      failed: 0,
      failures: { reset: 0, refused: 0, timeout: 0, badResponse: 0 },
      latency: newLatencyHistogram(),
      reloads: 0,
      reloadRatePerSec: 0,
      reloadMs: z,
      holdMs: z,
      elapsedMs: r.elapsedMs,
      ...base,
    };
  }
  const l = r.load;
  const rep: StrategyReport = {
    name: r.strategy,
    requests: l.requests,
    failed: l.failed,
    failures: Object.fromEntries(FAILURE_OUTCOMES.map((k) => [k, l.outcomes[k]])) as StrategyReport['failures'],
    latency: decodeHistogram(l.latencyHdr),
    reloads: r.reloads?.count ?? 0,
    reloadRatePerSec: r.reloads?.ratePerSec ?? 0,
    reloadMs: r.reloads?.durationMs ?? z,
    holdMs: r.hold?.ms ?? z,
    elapsedMs: l.elapsedMs,
    throughput: l.throughput,
    details: l.details,
    ...base,
  };
  if (r.strategy === 'baseline') rep.baseline = true;
  if (r.attribution) rep.attribution = r.attribution;
  if (r.slow) rep.slow = r.slow;
  if (r.counters) rep.counters = r.counters;
  if (r.reloads) {
    rep.reloadFailures = r.reloads.failed;
    if (r.reloads.failures.length > 0) rep.notes = [...(rep.notes ?? []), ...r.reloads.failures.map((f) => `failed ${f}`)];
    rep.intervalMs = r.reloads.nominalIntervalMs;
  }
  if (r.hold) {
    rep.hold = { source: r.hold.source };
    if (r.hold.released !== undefined) rep.hold.released = r.hold.released;
    if (r.hold.dropped !== undefined) rep.hold.dropped = r.hold.dropped;
    if (r.hold.reasons !== undefined) rep.hold.reasons = r.hold.reasons;
    if (r.hold.swapToReleaseMs !== undefined) rep.hold.swapToReleaseMs = r.hold.swapToReleaseMs;
    if (r.hold.drain !== undefined) rep.hold.drain = r.hold.drain;
  }
  return rep;
}

export interface KernelInfo {
  where: Where;
  kernel: string;
  cpus: number;
  description: string;
  haproxy?: string;
  /** why strategies run here (the lab) */
  reason?: string;
}

export interface CrossCheck {
  where: Where;
  strategy: StrategyName;
  ab: AbResult;
  /** wrk -t 1 with `Connection: close`, after ab (absent in results from before it was added) */
  wrk?: WrkResult;
  loadgen: { requests: number; failed: number; rps: number; meanMs: number; p50: number; p90: number; p99: number; max: number };
}

export interface BenchOutcome {
  json: BenchJson;
  reports: StrategyReport[];
  text: string;
  written: WrittenReport;
  exitCode: number;
}

export class BenchPreconditionError extends Error {
  readonly code = 'ERR_BENCH_PRECONDITION';
}

function checkPreconditions(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new BenchPreconditionError('synhold bench needs root (it creates network namespaces and sets qdiscs in them)');
  }
  const missing = [
    [NGINX_BIN, 'nginx-light'],
    [HAPROXY_BIN, 'haproxy'],
    ['/usr/sbin/tc', 'iproute2'],
    ['/usr/sbin/ip', 'iproute2'],
  ].filter(([p]) => !existsSync(p!) && !existsSync(p!.replace('/usr/sbin', '/sbin')));
  if (missing.length > 0) {
    throw new BenchPreconditionError(`missing ${missing.map(([p, pkg]) => `${p} (Debian package ${pkg})`).join(', ')}: run \`bash scripts/install-deps.sh\``);
  }
}

function describeOptions(o: BenchOptions): string {
  const bound =
    o.requests !== undefined
      ? `${o.requests.toLocaleString('en')} requests per strategy${o.minReloads ? ` and at least ${o.minReloads} reloads` : ''}`
      : `${(o.durationMs ?? 0) / 1000} s of load per strategy${o.minReloads ? ` and at least ${o.minReloads} reloads (${o.capMs / 1000} s at most)` : ''}`;
  return `${bound}, concurrency ${o.concurrency}, a new connection per request, a reload every ${o.intervalMs ?? DEFAULT_INTERVAL_MS} ms (start to start)`;
}

export interface RunBenchHooks {
  progress: ProgressView;
  signal?: AbortSignal;
  /** told when the lab starts and ends (an interrupt then has to end the process: UML cannot be aborted half-way) */
  onLab?: (running: boolean) => void;
}

export async function runBench(o: BenchOptions, hooks: RunBenchHooks): Promise<BenchOutcome> {
  checkPreconditions();
  const ui = hooks.progress;
  const startedAt = new Date();
  const t0 = Date.now();
  ui.note(`probing this kernel (${release()}) for sch_prio and sch_plug in a scratch namespace`);
  const features = await probeKernelFeatures();
  const needLab = o.strategies.some((s) => strategyFor(s).kernelNeeds.some((f) => !features[f].ok));
  const lab = needLab ? labAvailable() : { ok: false, reason: 'not needed' };
  const placement = placeStrategies(o.strategies, features, lab);
  const abOnHost = placement.host.includes('baseline');
  const workDir = mkdtempSync(join(tmpdir(), 'synhold-bench-work-'));
  const removeWorkDir = (): void => rmSync(workDir, { recursive: true, force: true });
  process.once('exit', removeWorkDir);

  const results: WorkerResult[] = [];
  const kernels: KernelInfo[] = [];
  let labInfo: { version: string; kernel: string } | undefined;
  try {
    // ---- host
    if (placement.host.length > 0) {
      const g = groupSpec(o, 'host', placement.host, workDir, abOnHost ? 'baseline' : undefined);
      ui.note(`host: ${placement.host.join(', ')}, each in its own network namespace (${describeOptions(o)})`);
      const tail = new FileTail(g.progressFile);
      const timer = setInterval(() => tail.events().forEach((e) => ui.event(e)), 250);
      try {
        await runGroup(g, hooks.signal ? { signal: hooks.signal } : {});
      } finally {
        clearInterval(timer);
        tail.events().forEach((e) => ui.event(e));
      }
      results.push(...readGroupResults(g));
      kernels.push({ where: 'host', kernel: release(), cpus: cpus().length, description: `this machine's kernel, ${cpus().length} CPUs` });
    }
    if (hooks.signal?.aborted) throw new Error('interrupted');

    // ---- kernel lab
    if (placement.lab.length > 0) {
      labInfo = labKernel();
      const g = groupSpec(o, 'lab', placement.lab, workDir, abOnHost ? undefined : 'baseline');
      const groupFile = join(workDir, 'group-lab.json');
      writeJsonFile(groupFile, g);
      const budget = g.workers.reduce((a, w) => a + w.load.capMs + WORKER_OVERHEAD_MS, 60_000);
      ui.note(`kernel lab (User-Mode Linux ${labInfo.version}, 1 CPU): ${placement.lab.join(', ')} — ${labReason(placement, features)}`);
      const tail = new FileTail(g.progressFile);
      const timer = setInterval(() => tail.events().forEach((e) => ui.event(e)), 250);
      let labError: string | undefined;
      hooks.onLab?.(true);
      try {
        const r = await runInLab({ command: [process.execPath, LAB_MAIN, groupFile], cwd: REPO_ROOT, share: [workDir], timeoutMs: budget, memMb: 1024 });
        if (r.timedOut) labError = `the kernel lab run timed out after ${Math.round(budget / 1000)} s`;
        else if (r.exitCode !== 0) labError = `the kernel lab run exited ${r.exitCode ?? r.signal}: ${r.stderr.trim().slice(-800)}`;
      } catch (e) {
        labError = `the kernel lab failed: ${(e as Error).message.slice(0, 1500)}`;
      } finally {
        hooks.onLab?.(false);
        clearInterval(timer);
        tail.events().forEach((e) => ui.event(e));
      }
      const labResults = readGroupResults(g, labError ?? 'the kernel lab wrote no result for it');
      for (const r of labResults) if (r.error !== undefined && r.elapsedMs === 0) r.kernel = labInfo.version;
      results.push(...labResults);
      const labKernelName = labResults.find((r) => r.load)?.kernel ?? labInfo.version;
      kernels.push({
        where: 'lab',
        kernel: labKernelName,
        cpus: labResults.find((r) => r.load)?.cpus ?? 1,
        description: `kernel lab: User-Mode Linux ${labInfo.version} (${labInfo.kernel}), 1 CPU, slow system calls`,
        reason: labReason(placement, features),
      });
    }
  } finally {
    removeWorkDir();
    process.removeListener('exit', removeWorkDir);
  }
  for (const k of kernels) {
    const hv = results.find((r) => r.where === k.where && r.haproxyVersion)?.haproxyVersion;
    if (hv) k.haproxy = hv;
  }

  // ---- reports, in the order: host group, lab group, then the ones that could not run anywhere
  const labelOf = (r: WorkerResult): string => (r.where === 'lab' ? `lab ${r.kernel}` : `host ${r.kernel}`);
  const reports = results.map((r) => reportFromResult(r, labelOf(r)));
  for (const name of sortStrategies(Object.keys(placement.skipped) as StrategyName[])) {
    reports.push(
      reportFromResult(
        { strategy: name, where: 'host', kernel: release(), cpus: cpus().length, netns: '', skipped: placement.skipped[name]!, notes: [], elapsedMs: 0 },
        `host ${release()}`,
      ),
    );
  }

  let crossCheck: CrossCheck | undefined;
  const abRes = results.find((r) => r.ab);
  if (abRes?.ab && abRes.load) {
    const s = summarizeMs(decodeHistogram(abRes.load.latencyHdr));
    crossCheck = {
      where: abRes.where,
      strategy: abRes.strategy,
      ab: abRes.ab,
      ...(abRes.wrk ? { wrk: abRes.wrk } : {}),
      loadgen: {
        requests: abRes.load.requests,
        failed: abRes.load.failed,
        rps: Math.round(abRes.load.throughput),
        meanMs: s.mean,
        p50: s.p50,
        p90: s.p90,
        p99: s.p99,
        max: s.max,
      },
    };
  }

  const jsonExtra: Record<string, unknown> = {
    kernels,
    command: o.argv.join(' '),
    preset: o.preset,
    options: {
      concurrency: o.concurrency,
      intervalMs: o.intervalMs ?? DEFAULT_INTERVAL_MS,
      ...(o.durationMs !== undefined ? { durationMs: o.durationMs } : {}),
      ...(o.requests !== undefined ? { requests: o.requests } : {}),
      ...(o.referenceRequests !== undefined ? { referenceRequests: o.referenceRequests } : {}),
      ...(o.minReloads !== undefined ? { minReloads: o.minReloads } : {}),
      requestTimeoutMs: o.requestTimeoutMs,
    },
    startedAt: startedAt.toISOString(),
    elapsedMs: Date.now() - t0,
    ...(crossCheck ? { crossCheck } : {}),
  };
  const headers = new Map<string, string>();
  for (const k of kernels) {
    headers.set(
      `${k.where}|${k.kernel}`,
      k.where === 'host'
        ? `host: Linux ${k.kernel}, ${k.cpus} CPUs${k.haproxy ? `, HAProxy ${k.haproxy}` : ''}`
        : `kernel lab: Linux ${k.kernel} (User-Mode Linux, ${k.cpus} CPU)${k.haproxy ? `, HAProxy ${k.haproxy}` : ''} — ${k.reason ?? ''}`,
    );
  }
  const text = [
    `synhold bench: ${describeOptions(o)}`,
    '',
    renderKernelTables(reports, headers),
    ...(crossCheck ? [renderCrossCheck(crossCheck), ''] : []),
    ...renderHolds(reports),
  ].join('\n');
  const title = `Request latency during HAProxy reloads (${o.preset === 'full' ? 'full run' : o.preset === 'quick' ? 'quick run' : 'bench'})`;
  const written = await writeReport(resolve(o.out), reports, { jsonExtra, table: text, svg: { title } });
  const exitCode = reports.some((r) => r.error !== undefined) ? 1 : 0;
  return { json: written.json, reports, text, written, exitCode };
}

export function renderCrossCheck(c: CrossCheck): string {
  const a = c.ab;
  const l = c.loadgen;
  if (a.error) return `ab cross-check (${c.where} ${c.strategy}): ${a.error}`;
  return [
    `ab cross-check on the ${c.where} ${c.strategy} run (same HAProxy -> nginx, a new connection per request, -c ${a.concurrency}):`,
    `  ab -n ${a.requests}:  ${a.rps.toFixed(0)} req/s, mean ${fmtMs(a.meanMs)} ms, p50 ${a.p50} ms, p90 ${a.p90} ms, p99 ${a.p99} ms, max ${a.max} ms, ${a.failed} failed`,
    `  synhold loadgen:  ${l.rps} req/s, mean ${fmtMs(l.meanMs)} ms, p50 ${fmtMs(l.p50)} ms, p90 ${fmtMs(l.p90)} ms, p99 ${fmtMs(l.p99)} ms, max ${fmtMs(l.max)} ms, ${l.failed} failed (${l.requests} requests)`,
    ...(c.wrk ? [wrkLine(c.wrk)] : []),
  ].join('\n');
}

function wrkLine(w: WrkResult): string {
  if (w.error) return `  wrk: ${w.error}`;
  return `  wrk -t ${w.threads} -c ${w.connections} -d ${w.durationS}s (Connection: close):  ${w.rps.toFixed(0)} req/s, p50 ${fmtMs(w.p50)} ms, p90 ${fmtMs(w.p90)} ms, p99 ${fmtMs(w.p99)} ms (after the connect), ${w.socketErrors + w.non2xx} errors (${w.requests} requests)`;
}

function renderHolds(reports: StrategyReport[]): string[] {
  const out: string[] = [];
  for (const r of reports) {
    if (r.skipped || !r.hold || r.holdMs.count === 0) continue;
    const reasons = r.hold.reasons
      ? Object.entries(r.hold.reasons)
          .map(([k, v]) => `${k}: ${v}`)
          .join(', ')
      : '';
    out.push(
      `hold ${r.name} (${r.where}): ${r.holdMs.count} holds, p50 ${fmtMs(r.holdMs.p50)} ms, p99 ${fmtMs(r.holdMs.p99)} ms, max ${fmtMs(r.holdMs.max)} ms` +
        (r.hold.released !== undefined ? `, ${r.hold.released} SYNs released, ${r.hold.dropped ?? 0} dropped` : '') +
        (r.hold.swapToReleaseMs && r.hold.swapToReleaseMs.count > 0
          ? `; release after the old listener closed: p50 ${fmtMs(r.hold.swapToReleaseMs.p50)} ms, p99 ${fmtMs(r.hold.swapToReleaseMs.p99)} ms, max ${fmtMs(r.hold.swapToReleaseMs.max)} ms (${r.hold.swapToReleaseMs.count} holds)`
          : '') +
        (r.hold.drain
          ? `; before the signal, drained p50 ${fmtMs(r.hold.drain.ms.p50)} ms, max ${fmtMs(r.hold.drain.ms.max)} ms, ${r.hold.drain.signalledWithQueued} signals with connections still queued and ${r.hold.drain.signalledWithHandshakes} with handshakes (${r.hold.drain.leftAtSignal} connections)`
          : '') +
        (reasons ? ` (${reasons})` : '') +
        ` — measured: ${r.hold.source}`,
    );
  }
  for (const r of reports) {
    if (!r.skipped && r.attribution && r.attribution.failedRequests > 0) out.push(attributionText(r.name, r.where ?? '', r.attribution, r.reloads));
  }
  for (const r of reports) {
    if (!r.skipped && r.slow && r.slow.requests > 0) out.push(slowText(r.name, r.where ?? '', r.slow));
  }
  for (const r of reports) {
    if (!r.skipped && r.counters) out.push(countersText(r.name, r.where ?? '', r.counters));
  }
  for (const r of reports) {
    if (!r.skipped && r.reloadFailures) {
      out.push(`reloads that failed: ${r.name} (${r.where}): ${r.reloadFailures} of ${r.reloads}`);
      for (const n of (r.notes ?? []).filter((x) => x.startsWith('failed reload')).slice(0, 3)) out.push(`  ${n}`);
    }
  }
  if (out.length > 0) out.push('');
  return out;
}

/** "none (host): 1495 failed requests started during 710 of 1644 reloads (at most 9 in one); ..." */
export function attributionText(name: string, where: string, a: Attribution, reloads: number): string {
  let t =
    `failures ${name}${where ? ` (${where})` : ''}: ${a.failedRequests} failed requests started during ${a.reloadsWithFailures} of ${reloads} reloads (at most ${a.maxPerReload} in one)` +
    (a.beforeFirstReload ? `, ${a.beforeFirstReload} before the first` : '');
  if (a.byReason) {
    t += `; by how the hold ended: ${Object.entries(a.byReason)
      .sort((x, y) => y[1].failedRequests - x[1].failedRequests)
      .map(([k, c]) => `${k}: ${c.failedRequests} failed in ${c.reloadsWithFailures} of ${c.holds} holds`)
      .join('; ')}`;
  }
  return t;
}

const ms0 = (x: number): string => `${Math.round(x)}`;

/** "slow nfqueue (host): 3 ok requests took >= 500 ms ...; the slowest: 1019 ms, started 12 ms after its hold's release, ..." */
export function slowText(name: string, where: string, s: SlowPlacement): string {
  const phases = s.byPhase
    ? `; started ${Object.entries(s.byPhase)
        .sort((x, y) => y[1] - x[1])
        .map(([k, n]) => `${k}: ${n}`)
        .join(', ')}`
    : '';
  const one = (q: SlowPlacement['slowest'][number]): string => {
    if (q.sinceReloadMs === undefined) return `${ms0(q.latencyMs)} ms, before the first reload`;
    const at = `${ms0(q.latencyMs)} ms, started ${ms0(q.sinceReloadMs)} ms into its reload`;
    switch (q.phase) {
      case 'during the hold':
        return `${at}, ${ms0(q.phaseMs!)} ms into its hold`;
      case 'after the release':
        return `${at}, ${ms0(q.phaseMs!)} ms after its hold's release`;
      case 'before the hold':
        return `${at}, ${ms0(q.phaseMs!)} ms before its hold`;
      case 'no hold':
        return `${at}, a reload without a hold`;
      default:
        return at;
    }
  };
  return (
    `slow ${name}${where ? ` (${where})` : ''}: ${s.requests} ok requests took >= ${s.thresholdMs} ms, in ${s.reloadsWithSlow} reloads` +
    (s.beforeFirstReload ? ` (${s.beforeFirstReload} before the first)` : '') +
    phases +
    `; the slowest: ${s.slowest.slice(0, 3).map(one).join('; ')}`
  );
}

/** "kernel counters nfqueue (host): TcpExtTCPSynRetrans +3, ..." (none moved: says so). */
export function countersText(name: string, where: string, c: Record<string, number>): string {
  const moved = Object.entries(c);
  return (
    `kernel counters ${name}${where ? ` (${where})` : ''} during the load: ` +
    (moved.length === 0 ? 'none of the watched counters moved' : moved.map(([k, v]) => `${k} ${v > 0 ? '+' : ''}${v}`).join(', '))
  );
}

/** Write the JSON document somewhere else too (docs). */
export function writeBenchJson(path: string, doc: BenchJson): void {
  writeFileSync(path, `${JSON.stringify(doc, null, 2)}\n`);
}
