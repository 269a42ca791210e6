// docs/BENCHMARKS.md, written from the JSON documents `synhold bench` produced,
// never by hand:
//
//   node dist/bench/src/docs.js --out docs/BENCHMARKS.md docs/bench/host/bench.json docs/bench/lab/bench.json
//
// For each run: the command, the kernels, one table per kernel, the figure
// (the run's own latency.png / .svg, next to its bench.json), the ab
// cross-check. Then the seed's findings, one by one, each with a verdict
// (reproduced / contradicted / not measured) computed from the numbers, and
// the numbers themselves.

import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { histogramPoints } from './histogram.js';
import { FAILURE_OUTCOMES } from './loadgen.js';
import { fmtMs, fmtPct, kernelKey, reportsFromBenchJson, resultCells, summarize, type BenchJson, type StrategyReport, type SummaryRow } from './report.js';
import { attributionText, countersText, slowText, type CrossCheck, type KernelInfo } from './bench.js';
import { QUICK_CAP_MS, QUICK_DURATION_MS, QUICK_MIN_RELOADS } from './options.js';
import { compareTable, type CompareArgs, type RunRecord as CompareRun } from './load/compare.js';

/** A `load/compare.js --json` document: the generator and the C clients, side by side in one run. */
export interface LoadCompare {
  /** the command that made it, as the page shows it */
  command: string;
  doc: { args: CompareArgs; runs: CompareRun[] };
}

export interface Run {
  /** path of the bench.json, as given */
  path: string;
  /** "run 2", when the page shows several */
  label?: string;
  doc: BenchJson;
  reports: StrategyReport[];
  rows: SummaryRow[];
}

export function loadRun(path: string): Run {
  const doc = JSON.parse(readFileSync(path, 'utf8')) as BenchJson;
  return runFromDoc(path, doc);
}

export function runFromDoc(path: string, doc: BenchJson): Run {
  const reports = reportsFromBenchJson(doc);
  return { path, doc, reports, rows: summarize(reports) };
}

/** One measured row with where it came from. */
interface Row {
  run: Run;
  rep: StrategyReport;
  row: SummaryRow;
}

function allRows(runs: Run[]): Row[] {
  return runs.flatMap((run) => run.reports.map((rep, i) => ({ run, rep, row: run.rows[i]! })));
}

const measured = (r: Row): boolean => r.row.skipped === undefined;

function kernelsOf(doc: BenchJson): KernelInfo[] {
  return (doc.kernels as KernelInfo[] | undefined) ?? [];
}

function kernelName(r: Row): string {
  return `${kernelOnly(r)}${r.run.label ? ` [${r.run.label}]` : ''}`;
}

function kernelOnly(r: Row): string {
  const k = kernelsOf(r.run.doc).find((k) => k.where === r.rep.where && k.kernel === r.rep.kernel);
  if (r.rep.where === 'lab') return `the kernel lab (Linux ${r.rep.kernel}, User-Mode Linux, ${k?.cpus ?? 1} CPU)`;
  return `the host (Linux ${r.rep.kernel ?? r.run.doc.kernel}${k ? `, ${k.cpus} CPUs` : ''})`;
}

/** Ok requests at or above `ms`, and their share of all requests. */
export function slowCount(rep: StrategyReport, ms: number): { n: number; pct: number } {
  let n = 0;
  for (const p of histogramPoints(rep.latency)) if (p.ms >= ms) n += p.count;
  return { n, pct: rep.requests > 0 ? (100 * n) / rep.requests : 0 };
}

const fmtInt = (n: number): string => n.toLocaleString('en');
const failuresText = (row: SummaryRow): string =>
  FAILURE_OUTCOMES.filter((k) => row.failures[k] > 0)
    .map((k) => `${k} ${row.failures[k]}`)
    .join(', ') || 'none';

// ---------------------------------------------------------------- tables

function mdEscape(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

export function mdTable(rows: SummaryRow[]): string {
  const head = [
    'strategy',
    'requests',
    'reloads',
    'reloads/s',
    'reload ms p50 / max',
    'hold ms p50 / max',
    'failed',
    'failed %',
    'p50 ms',
    'p99 ms',
    'p99.9 ms',
    'max ms',
    'added p50',
    'added p99',
    'added p99.9',
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`];
  for (const r of rows) {
    if (r.skipped !== undefined) {
      lines.push(
        `| ${r.name} | ${head
          .slice(1)
          .map(() => '-')
          .join(' | ')} |`,
      );
      continue;
    }
    lines.push(`| ${resultCells(r, 'md').join(' | ')} |`);
  }
  const notes: string[] = [];
  for (const r of rows) {
    if (r.skipped !== undefined) notes.push(`- **${r.name}** did not run: ${mdEscape(r.skipped)}`);
    else if (r.failed > 0) notes.push(`- ${r.name}: failures: ${failuresText(r)}`);
  }
  return [...lines, ...(notes.length ? ['', ...notes] : [])].join('\n');
}

function renderCrossCheckMd(c: CrossCheck): string {
  const a = c.ab;
  const l = c.loadgen;
  const w = c.wrk;
  if (a.error) return `ab cross-check on the ${c.where} ${c.strategy} run: ${a.error}`;
  return [
    `Cross-check of the load generator with \`ab\` (the seed's client), on the ${c.where} ${c.strategy} run: the same HAProxy -> nginx pair, a new connection per request, concurrency ${a.concurrency}.`,
    '',
    '| client | requests | failed | req/s | mean ms | p50 ms | p90 ms | p99 ms | max ms |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    `| ab | ${fmtInt(a.complete)} | ${a.failed} | ${a.rps.toFixed(0)} | ${fmtMs(a.meanMs)} | ${a.p50} | ${a.p90} | ${a.p99} | ${a.max} |`,
    `| synhold bench's generator | ${fmtInt(l.requests)} | ${l.failed} | ${l.rps} | ${fmtMs(l.meanMs)} | ${fmtMs(l.p50)} | ${fmtMs(l.p90)} | ${fmtMs(l.p99)} | ${fmtMs(l.max)} |`,
    ...(w && !w.error
      ? [
          `| wrk -t ${w.threads}, \`Connection: close\`, ${w.durationS} s (latency after the connect) | ${fmtInt(w.requests)} | ${w.socketErrors + w.non2xx} | ${w.rps.toFixed(0)} | - | ${fmtMs(w.p50)} | ${fmtMs(w.p90)} | ${fmtMs(w.p99)} | - |`,
        ]
      : []),
    '',
    `Both see no failure without reloads. ab's percentiles are whole milliseconds. ` +
      (a.rps < l.rps * 1.25
        ? `The two agree: ab's rate is within ${Math.round((100 * Math.abs(a.rps - l.rps)) / l.rps)}% of the generator's, and so are the latencies: here the servers, not the client, set the pace.`
        : `ab, a C program, drives ${(a.rps / Math.max(1, l.rps)).toFixed(1)}x the request rate of the Node.js generator at the same concurrency, so its latencies are lower by about that factor (closed loop: latency ≈ concurrency / rate); the generator's own event loop is part of what it measures. Every strategy runs under the same generator, so the rows compare with each other; the added-latency columns subtract the generator's baseline.`),
    ...(w
      ? [
          '',
          w.error
            ? `wrk, the second C client: ${w.error}.`
            : `wrk, the second C client (one thread, an epoll loop like the generator's), drove ${w.rps.toFixed(0)} req/s: the generator's rate is ${Math.round((100 * l.rps) / Math.max(1, w.rps))}% of it. wrk's latency starts after the connect, so only its rate compares.`,
        ]
      : []),
  ].join('\n');
}

export function renderRun(run: Run, outDir: string, index: number): string {
  const d = run.doc;
  const opts = (d.options ?? {}) as { concurrency?: number; intervalMs?: number; durationMs?: number; requests?: number; minReloads?: number };
  const figDir = relative(outDir, dirname(resolve(run.path))) || '.';
  const out: string[] = [];
  out.push(`### Run ${index}: \`${d.command as string}\``, '');
  out.push(
    `Started ${(d.startedAt as string) ?? '?'}, took ${Math.round(((d.elapsedMs as number) ?? 0) / 60000)} min. ` +
      `Load per strategy: ${opts.requests !== undefined ? `${fmtInt(opts.requests)} requests` : `${(opts.durationMs ?? 0) / 1000} s`}${opts.minReloads ? ` and at least ${opts.minReloads} reloads` : ''}, ` +
      `concurrency ${opts.concurrency}, a reload every ${opts.intervalMs} ms start to start (drop: every 1 s, the seed's rate for it). Raw data: [\`${join(figDir, 'bench.json')}\`](${join(figDir, 'bench.json')}).`,
    '',
  );
  const keys = [...new Set(run.reports.map(kernelKey))];
  for (const k of keys) {
    const idx = run.reports.map((r, i) => (kernelKey(r) === k ? i : -1)).filter((i) => i >= 0);
    const first = run.reports[idx[0]!]!;
    const info = kernelsOf(d).find((x) => `${x.where}|${x.kernel}` === k);
    const title = info
      ? info.where === 'host'
        ? `Host: Linux ${info.kernel}, ${info.cpus} CPUs${info.haproxy ? `, HAProxy ${info.haproxy}` : ''}`
        : `Kernel lab: Linux ${info.kernel}, User-Mode Linux, ${info.cpus} CPU${info.haproxy ? `, HAProxy ${info.haproxy}` : ''}`
      : first.where === undefined
        ? 'Strategies'
        : `Could not run (${first.where})`;
    out.push(`#### ${title}`, '');
    if (info?.reason) out.push(`Runs here because ${mdEscape(info.reason)}.`, '');
    out.push(mdTable(idx.map((i) => run.rows[i]!)), '');
  }
  out.push(
    `![Latency histograms, one panel per strategy](${join(figDir, 'latency.png')})`,
    '',
    `Latency of ok requests (connect start to the response's end), log-scale latency and count, p50 (blue) and p99 (red) dashed. Vector version: [\`latency.svg\`](${join(figDir, 'latency.svg')}).`,
    '',
  );
  if (d.crossCheck) out.push(renderCrossCheckMd(d.crossCheck as CrossCheck), '');
  const holds = run.reports.filter((r) => !r.skipped && r.hold && r.holdMs.count > 0);
  if (holds.length > 0) {
    out.push('Holds:', '');
    for (const r of holds) {
      const reasons = r.hold!.reasons
        ? Object.entries(r.hold!.reasons)
            .map(([k, v]) => `${mdEscape(k)} (${v})`)
            .join('; ')
        : '';
      out.push(
        `- **${r.name}** (${r.where}): ${fmtInt(r.holdMs.count)} holds, p50 ${fmtMs(r.holdMs.p50)} ms, p99 ${fmtMs(r.holdMs.p99)} ms, max ${fmtMs(r.holdMs.max)} ms` +
          (r.hold!.released !== undefined ? `; ${fmtInt(r.hold!.released)} SYNs held and released, ${r.hold!.dropped ?? 0} dropped` : '') +
          (reasons ? `; released because: ${reasons}` : '') +
          `. Measured: ${mdEscape(r.hold!.source)}.`,
      );
    }
    out.push('');
  }
  const charged = run.reports.filter((r) => !r.skipped && r.attribution && r.attribution.failedRequests > 0);
  if (charged.length > 0) {
    out.push('Failed requests, charged to the reload they started during:', '');
    for (const r of charged) out.push(`- ${mdEscape(attributionText(r.name, r.where ?? '', r.attribution!, r.reloads))}.`);
    out.push('');
  }
  const slow = run.reports.filter((r) => !r.skipped && r.slow && r.slow.requests > 0);
  if (slow.length > 0) {
    out.push(
      `Slow ok requests (at least ${slow[0]!.slow!.thresholdMs} ms; a lost SYN costs 1 s), placed in the reload they started during and, for the holds, before, in or after the hold (protect's \`holdStartedAt\` and \`holdMs\`):`,
      '',
    );
    for (const r of slow) out.push(`- ${mdEscape(slowText(r.name, r.where ?? '', r.slow!))}.`);
    out.push('');
  }
  const counted = run.reports.filter((r) => !r.skipped && r.counters);
  if (counted.length > 0) {
    out.push(
      "Kernel counters of each strategy's namespace that moved during its load (/proc/net/netstat and /proc/net/snmp, what `nstat` prints; drops, SYN retransmits, resets, migrated requests):",
      '',
    );
    for (const r of counted) out.push(`- ${mdEscape(countersText(r.name, r.where ?? '', r.counters!))}.`);
    out.push('');
  }
  const failedReloads = run.reports.filter((r) => !r.skipped && (r.reloadFailures ?? 0) > 0);
  for (const r of failedReloads)
    out.push(
      `- ${r.name} (${r.where}): ${r.reloadFailures} of ${r.reloads} reloads failed: ${mdEscape(
        (r.notes ?? [])
          .filter((n) => n.startsWith('failed reload'))
          .slice(0, 2)
          .join('; '),
      )}`,
    );
  if (failedReloads.length) out.push('');
  return out.join('\n');
}

// ---------------------------------------------------------------- findings

export type Verdict = 'reproduced' | 'contradicted' | 'not measured' | 'compared';

export interface Finding {
  title: string;
  seed: string;
  verdict: Verdict;
  evidence: string[];
}

function rowsNamed(runs: Run[], name: string): Row[] {
  return allRows(runs).filter((r) => r.rep.name === name);
}

function notMeasured(rows: Row[]): string[] {
  return rows.filter((r) => !measured(r)).map((r) => `${r.rep.name} did not run on ${kernelName(r)}: ${r.row.skipped}`);
}

function sameKernel(a: Row, b: Row): boolean {
  return a.run === b.run && kernelKey(a.rep) === kernelKey(b.rep);
}

/** The measured row of strategy `name` from the same run and kernel as `r`, if there is one. */
function measuredBeside(runs: Run[], name: string, r: Row): Row | undefined {
  return rowsNamed(runs, name).find((n) => measured(n) && sameKernel(n, r));
}

function addedText(r: Row): string {
  return r.row.addedMs
    ? `added latency p50 ${fmtMs(r.row.addedMs.p50)} ms, p99 ${fmtMs(r.row.addedMs.p99)} ms, p99.9 ${fmtMs(r.row.addedMs.p999)} ms`
    : 'no baseline';
}

function zeroFailureFinding(runs: Run[], name: string, title: string, seed: string): Finding {
  const rows = rowsNamed(runs, name);
  const m = rows.filter(measured);
  const evidence = m.map(
    (r) =>
      `${kernelName(r)}: ${fmtInt(r.row.failed)} of ${fmtInt(r.row.requests)} requests failed over ${fmtInt(r.row.reloads)} reloads (${r.row.reloadRatePerSec.toFixed(2)}/s)` +
      `${r.row.failed > 0 ? ` (${failuresText(r.row)})` : ''}; holds p50 ${fmtMs(r.row.holdMs.p50)} ms, max ${fmtMs(r.row.holdMs.max)} ms; ${addedText(r)}; latency max ${fmtMs(r.row.latencyMs.max)} ms.` +
      (r.row.requests < 1_000_000 || r.row.reloads < 1500
        ? ` (The seed's scale was 1,000,000 requests and 1,500+ reloads; this run had ${fmtInt(r.row.requests)} and ${fmtInt(r.row.reloads)}.)`
        : ''),
  );
  const charged = m
    .filter((r) => r.rep.attribution && r.rep.attribution.failedRequests > 0)
    .map((r) => `${kernelName(r)}: ${attributionText(r.rep.name, '', r.rep.attribution!, r.row.reloads)}.`);
  return {
    title,
    seed,
    verdict: m.length === 0 ? 'not measured' : m.every((r) => r.row.failed === 0) ? 'reproduced' : 'contradicted',
    evidence: [...evidence, ...charged, ...notMeasured(rows)],
  };
}

export function findings(runs: Run[]): Finding[] {
  const out: Finding[] = [];

  // 1. plain -sf fails some requests
  {
    const rows = rowsNamed(runs, 'none');
    const m = rows.filter(measured);
    out.push({
      title: '`none` (plain `haproxy -sf`) fails some requests',
      seed: 'reloading every 100 ms with -sf, "only 0.25% of requests failed" (HAProxy 1.5.11, Linux 3.13)',
      verdict: m.length === 0 ? 'not measured' : m.every((r) => r.row.failed > 0) ? 'reproduced' : 'contradicted',
      evidence: [
        ...m.map(
          (r) =>
            `${kernelName(r)}: ${fmtInt(r.row.failed)} of ${fmtInt(r.row.requests)} requests failed (${fmtPct(r.row.failedPct)}; ${failuresText(r.row)}) over ${fmtInt(r.row.reloads)} reloads at ${r.row.reloadRatePerSec.toFixed(2)}/s, ` +
            `${(r.row.failed / Math.max(1, r.row.reloads)).toFixed(2)} failed requests per reload; a reload took ${fmtMs(r.row.reloadMs.p50)} ms (p50).` +
            (r.rep.attribution
              ? ` The failed requests started during ${fmtInt(r.rep.attribution.reloadsWithFailures)} of the ${fmtInt(r.row.reloads)} reloads (at most ${r.rep.attribution.maxPerReload} in one).`
              : ''),
        ),
        ...notMeasured(rows),
      ],
    });
  }

  // 2. drop: no failures, but a ~1 s mode
  {
    const rows = rowsNamed(runs, 'drop');
    const m = rows.filter(measured);
    const ev = m.map((r) => {
      const s1 = slowCount(r.rep, 900);
      const s2 = slowCount(r.rep, 1900);
      return {
        r,
        s1,
        text:
          `${kernelName(r)}: ${fmtInt(r.row.failed)} of ${fmtInt(r.row.requests)} requests failed over ${fmtInt(r.row.reloads)} reloads (${r.row.reloadRatePerSec.toFixed(2)}/s); ` +
          `${fmtInt(s1.n)} ok requests (${fmtPct(s1.pct)}) took 0.9 s or more, ${fmtInt(s2.n)} took 1.9 s or more (a second SYN retransmit); p99 ${fmtMs(r.row.latencyMs.p99)} ms, p99.9 ${fmtMs(r.row.latencyMs.p999)} ms, max ${fmtMs(r.row.latencyMs.max)} ms.`,
      };
    });
    out.push({
      title: '`drop` (drop SYNs during the reload) fails none but adds a ~1 s mode',
      seed: '"we drop no requests but incur an additional one second of latency"; "less than one percent of the test requests observe the high latency" (reloading every second)',
      verdict: m.length === 0 ? 'not measured' : ev.every((e) => e.r.row.failed === 0 && e.s1.n > 0 && e.s1.pct < 1) ? 'reproduced' : 'contradicted',
      evidence: [...ev.map((e) => e.text), ...notMeasured(rows)],
    });
  }

  // 3, 4. plug and nfqueue fail none
  out.push(
    zeroFailureFinding(
      runs,
      'plug',
      '`plug` (synhold, sch_plug) fails none',
      '"Restarting HAProxy has basically no effect on our traffic": 1,000,000 requests, over 1,500 reloads, no failure, only minor delays',
    ),
  );
  out.push(
    zeroFailureFinding(
      runs,
      'nfqueue',
      '`nfqueue` (synhold, kernels without sch_plug) fails none',
      "nothing; NFQUEUE is synhold's hold for kernels without sch_plug, and must keep the seed's result (no failure)",
    ),
  );

  // 5. plug vs plug-spawn
  {
    const plugs = rowsNamed(runs, 'plug').filter(measured);
    const spawns = rowsNamed(runs, 'plug-spawn').filter(measured);
    const pairs = plugs.flatMap((p) => spawns.filter((s) => sameKernel(p, s)).map((s) => [p, s] as const));
    out.push({
      title: "`plug` compared with `plug-spawn` (the seed's own tooling) on the same kernel",
      seed: 'it plugs with `nl-qdisc-add --buffer`, reloads, and releases with `nl-qdisc-add --release-indefinite`: a process per step, and the release only after the reload command returns; it saw about 20 ms of added latency in production',
      verdict: pairs.length === 0 ? 'not measured' : 'compared',
      evidence: pairs.length
        ? pairs.flatMap(([p, s]) => [
            `${kernelName(p)}: hold p50 / p99 / max: plug ${fmtMs(p.row.holdMs.p50)} / ${fmtMs(p.row.holdMs.p99)} / ${fmtMs(p.row.holdMs.max)} ms, plug-spawn ${fmtMs(s.row.holdMs.p50)} / ${fmtMs(s.row.holdMs.p99)} / ${fmtMs(s.row.holdMs.max)} ms ` +
              `(plug's p50 hold is ${fmtMs(Math.abs(s.row.holdMs.p50 - p.row.holdMs.p50))} ms ${p.row.holdMs.p50 <= s.row.holdMs.p50 ? 'shorter' : 'longer'}).`,
            `Failures: plug ${fmtInt(p.row.failed)} of ${fmtInt(p.row.requests)}, plug-spawn ${fmtInt(s.row.failed)} of ${fmtInt(s.row.requests)}.`,
            `Request latency: plug p50 ${fmtMs(p.row.latencyMs.p50)} ms, p99 ${fmtMs(p.row.latencyMs.p99)} ms (${addedText(p)}); plug-spawn p50 ${fmtMs(s.row.latencyMs.p50)} ms, p99 ${fmtMs(s.row.latencyMs.p99)} ms (${addedText(s)}).`,
            `Whole reload (wrapper included), p50: plug ${fmtMs(p.row.reloadMs.p50)} ms (\`synhold protect -- haproxy ...\`, a Node.js process that forks a holder), plug-spawn ${fmtMs(s.row.reloadMs.p50)} ms (the haproxy command alone; nl-qdisc-add runs before and after it); reloads done: ${fmtInt(p.row.reloads)} vs ${fmtInt(s.row.reloads)} (${p.row.reloadRatePerSec.toFixed(2)}/s vs ${s.row.reloadRatePerSec.toFixed(2)}/s).`,
          ])
        : ['plug and plug-spawn did not both run on one kernel in these runs.', ...notMeasured([...rowsNamed(runs, 'plug'), ...rowsNamed(runs, 'plug-spawn')])],
    });
  }

  // 6. haproxy-seamless and migrate-req
  {
    const ev: string[] = [];
    let any = false;
    for (const name of ['haproxy-seamless', 'migrate-req']) {
      for (const r of rowsNamed(runs, name)) {
        if (!measured(r)) {
          ev.push(`${name} did not run on ${kernelName(r)}: ${r.row.skipped}`);
          continue;
        }
        any = true;
        const none = measuredBeside(runs, 'none', r);
        const plug = measuredBeside(runs, 'plug', r);
        ev.push(
          `${name} on ${kernelName(r)}: ${fmtInt(r.row.failed)} of ${fmtInt(r.row.requests)} requests failed (${fmtPct(r.row.failedPct)}) over ${fmtInt(r.row.reloads)} reloads (${r.row.reloadRatePerSec.toFixed(2)}/s); ${addedText(r)}` +
            (none ? `; \`none\` on the same kernel: ${fmtInt(none.row.failed)} failed (${fmtPct(none.row.failedPct)}), ${addedText(none)}` : '') +
            (plug ? `; \`plug\` on the same kernel: ${fmtInt(plug.row.failed)} failed, ${addedText(plug)}` : '') +
            '.',
        );
      }
    }
    const plugKernels = rowsNamed(runs, 'plug')
      .filter(measured)
      .map((p) => kernelOnly(p));
    const otherKernels = [...rowsNamed(runs, 'haproxy-seamless'), ...rowsNamed(runs, 'migrate-req')].filter(measured).map((p) => kernelOnly(p));
    if (plugKernels.length > 0 && otherKernels.length > 0 && !plugKernels.some((k) => otherKernels.includes(k))) {
      ev.push(
        `\`plug\` ran on ${[...new Set(plugKernels)].join(', ')} and these two on ${[...new Set(otherKernels)].join(', ')}: different kernels, so their latencies do not compare directly; compare each with \`none\` and the baseline of its own kernel.`,
      );
    }
    out.push({
      title: '`plug` compared with `haproxy-seamless` (fd hand-over) and `migrate-req` (tcp_migrate_req)',
      seed: "nothing (2015); HAProxy's `-x` hand-over came in 1.8 (2017), `net.ipv4.tcp_migrate_req` in Linux 5.14 (2021); both fix the same race without holding anything",
      verdict: any ? 'compared' : 'not measured',
      evidence: ev,
    });
  }

  // 7. the short hold (protect's default) against the conservative one
  out.push(shortHoldFinding(runs));
  // 8. the hold around the old process's stop (--stop-old) against the fd hand-over
  out.push(stopOldFinding(runs));
  return out;
}

/** Hold p50 / p99 / max, and when the hold ended after the swap, as protect reported them. */
function holdText(r: Row): string {
  const gap = r.rep.hold?.swapToReleaseMs;
  return (
    `${fmtInt(r.row.failed)} of ${fmtInt(r.row.requests)} requests failed over ${fmtInt(r.row.reloads)} reloads; hold p50 / p99 / max ${fmtMs(r.row.holdMs.p50)} / ${fmtMs(r.row.holdMs.p99)} / ${fmtMs(r.row.holdMs.max)} ms; ` +
    (gap && gap.count > 0
      ? `release after the last old listener closed p50 / p99 / max ${fmtMs(gap.p50)} / ${fmtMs(gap.p99)} / ${fmtMs(gap.max)} ms (${fmtInt(gap.count)} holds saw the close); `
      : 'no hold saw the old listener close before its release; ') +
    addedText(r)
  );
}

/**
 * Issue 9's rows: protect's default hold ends at the socket swap (`plug`, `nfqueue`); the
 * conservative one holds until the reload command exits (`plug-exit`, `nfqueue-exit`). Goals:
 * 0 failed, the release within 1 ms of the swap at p99 on the host, and the short hold's added
 * p99.9 within 5 ms of HAProxy's own fd hand-over (`haproxy-seamless`) on the same kernel.
 */
function shortHoldFinding(runs: Run[]): Finding {
  const ev: string[] = [];
  let any = false;
  for (const base of ['nfqueue', 'plug']) {
    for (const short of rowsNamed(runs, base).filter(measured)) {
      const cons = measuredBeside(runs, `${base}-exit`, short);
      if (!cons) continue;
      any = true;
      ev.push(
        `${kernelName(short)}, short hold (\`${base}\`): ${holdText(short)}.`,
        `${kernelName(cons)}, conservative hold (\`${base}-exit\`): ${holdText(cons)}.`,
      );
      const gap = short.rep.hold?.swapToReleaseMs;
      if (gap && gap.count > 0 && short.rep.where === 'host') {
        ev.push(`Release within 1 ms of the swap at p99 (the goal, on the host): ${gap.p99 <= 1 ? 'met' : 'not met'} (${fmtMs(gap.p99)} ms).`);
      }
      const seamless = measuredBeside(runs, 'haproxy-seamless', short);
      if (seamless?.row.addedMs && short.row.addedMs) {
        const d = short.row.addedMs.p999 - seamless.row.addedMs.p999;
        ev.push(
          `Added p99.9, short hold vs \`haproxy-seamless\` (fd hand-over, nothing held) on the same kernel: ${fmtMs(short.row.addedMs.p999)} vs ${fmtMs(seamless.row.addedMs.p999)} ms, ` +
            `${fmtMs(Math.abs(d))} ms ${d >= 0 ? 'more' : 'less'}; the goal (within 5 ms) is ${d <= 5 ? 'met' : 'not met'}.`,
        );
      }
    }
  }
  // What real-time priority while holding (protect's default) does to the release: `nfqueue`
  // beside `nfqueue-normal` (the same, with --priority normal) in one run.
  for (const rt of rowsNamed(runs, 'nfqueue').filter(measured)) {
    const normal = measuredBeside(runs, 'nfqueue-normal', rt);
    const a = rt.rep.hold?.swapToReleaseMs;
    const b = normal?.rep.hold?.swapToReleaseMs;
    if (!normal || !a?.count || !b?.count) continue;
    any = true;
    // Beside a conservative hold, the loop above already gave this row and the goal.
    const aloneHere = !measuredBeside(runs, 'nfqueue-exit', rt);
    if (aloneHere) ev.push(`${kernelName(rt)}, short hold (\`nfqueue\`, real-time priority while holding): ${holdText(rt)}.`);
    ev.push(
      `${kernelName(normal)}, short hold at normal priority (\`nfqueue-normal\`, \`--priority normal\`): ${holdText(normal)}.`,
      `Release after the swap, real-time vs normal priority while holding (same run): p50 ${fmtMs(a.p50)} vs ${fmtMs(b.p50)} ms, p99 ${fmtMs(a.p99)} vs ${fmtMs(b.p99)} ms, max ${fmtMs(a.max)} vs ${fmtMs(b.max)} ms.`,
    );
    if (rt.rep.where === 'host' && aloneHere)
      ev.push(`Release within 1 ms of the swap at p99 (the goal, on the host): ${a.p99 <= 1 ? 'met' : 'not met'} (${fmtMs(a.p99)} ms).`);
  }
  const named = ['nfqueue', 'nfqueue-exit', 'nfqueue-normal', 'plug', 'plug-exit'].flatMap((n) => rowsNamed(runs, n));
  return {
    title: "The short hold (released at the socket swap, protect's default) compared with the conservative one (`--release-on exit`)",
    seed: 'new connections wait "the amount of time it takes HAProxy to restart"; its hold ends when the reload command returns',
    verdict: any ? 'compared' : 'not measured',
    evidence: any ? [...ev, ...notMeasured(named)] : ['no run had both holds on one kernel.', ...notMeasured(named)],
  };
}

/**
 * Issue 9's last goal, with `--stop-old` (`plug-stop-old`, `nfqueue-stop-old`): the new HAProxy starts
 * beside the old one and protect holds only around the old one's soft stop. Against HAProxy's own fd
 * hand-over (`haproxy-seamless`) of the same run: 0 failed, and the added p99.9 within 5 ms. The
 * reload rates differ (a reload is paced by its command's length), and the page says so.
 */
function stopOldFinding(runs: Run[]): Finding {
  const ev: string[] = [];
  let any = false;
  for (const name of ['nfqueue-stop-old', 'plug-stop-old']) {
    for (const r of rowsNamed(runs, name).filter(measured)) {
      any = true;
      ev.push(
        `${kernelName(r)}, hold around the stop (\`${name}\`): ${holdText(r)}; ${fmtInt(r.row.reloads)} reloads at ${r.row.reloadRatePerSec.toFixed(2)}/s.`,
      );
      const seamless = measuredBeside(runs, 'haproxy-seamless', r);
      if (seamless?.row.addedMs && r.row.addedMs) {
        const d = r.row.addedMs.p999 - seamless.row.addedMs.p999;
        ev.push(
          `Added p99.9 vs \`haproxy-seamless\` (fd hand-over, nothing held; ${fmtInt(seamless.row.reloads)} reloads at ${seamless.row.reloadRatePerSec.toFixed(2)}/s) in the same run: ` +
            `${fmtMs(r.row.addedMs.p999)} vs ${fmtMs(seamless.row.addedMs.p999)} ms, ${fmtMs(Math.abs(d))} ms ${d >= 0 ? 'more' : 'less'}; the goal (within 5 ms) is ${d <= 5 ? 'met' : 'not met'}.`,
        );
      }
      const short = measuredBeside(runs, name.replace('-stop-old', ''), r);
      if (short) ev.push(`Beside it, protect's default hold (\`${short.rep.name}\`, \`-sf\`, the same run): ${holdText(short)}.`);
    }
  }
  return {
    title: 'The hold around the stop (`protect --stop-old USR1`, HAProxy started without `-sf`) compared with the fd hand-over (`haproxy-seamless`)',
    seed: 'new connections wait "the amount of time it takes HAProxy to restart"; the hold begins before the new process starts',
    verdict: any ? 'compared' : 'not measured',
    evidence: any ? [...ev, ...notMeasured([...rowsNamed(runs, 'nfqueue-stop-old'), ...rowsNamed(runs, 'plug-stop-old')])] : ['no run had a --stop-old row.'],
  };
}

export function renderFindings(fs: Finding[]): string {
  const out: string[] = [];
  fs.forEach((f, i) => {
    out.push(`### ${i + 1}. ${f.title}: **${f.verdict}**`, '', `*The seed:* ${f.seed}.`, '');
    for (const e of f.evidence) out.push(`- ${e}`);
    out.push('');
  });
  return out.join('\n');
}

// ---------------------------------------------------------------- the page

/** The section on the load generator against the C clients (issue 12: within 10% of the best one). */
export function renderLoadCompare(cs: LoadCompare | readonly LoadCompare[]): string {
  const list = Array.isArray(cs) ? (cs as readonly LoadCompare[]) : [cs as LoadCompare];
  return [
    '## The load generator against the C clients',
    '',
    "Every row of the tables above is driven by the bench's own generator (it tells a reset from a refusal from a",
    'timeout and never gives up, which ab cannot do under reloads). Held against ab and wrk on the same HAProxy -> nginx',
    `pair, the clients taking turns within each round, in ${list.length === 1 ? 'one run' : `${list.length} runs${new Set(list.map((c) => c.command.replace(/--json \S+.*$/, ''))).size === 1 ? ' of the same command' : ''}, each its own table with its command`}:`,
    '',
    "The generator has two engines (bench/src/load/): the JS one (`loadgen:tN`: N worker threads over Node's TCP handles) and",
    "the native one (`loadgen:native`: bench/native/loadgen-engine.c, an epoll loop in a child process, which runs the bench's",
    'closed loop wherever it is built, since commit a195b52). In compare runs made before it, `loadgen` is the JS engine, and',
    'so is the generator of every bench run above that predates it.',
    '',
    ...list.flatMap((c, i) => [
      ...(list.length > 1 ? [`### Run ${i + 1}`, ''] : []),
      `Command: \`${c.command}\``,
      '',
      compareTable(c.doc.args, c.doc.runs),
      '',
    ]),
  ].join('\n');
}

export function renderBenchmarksMd(runs: Run[], outFile: string, command: string, loadCompare?: LoadCompare | readonly LoadCompare[]): string {
  const outDir = dirname(resolve(outFile));
  if (runs.length > 1) runs.forEach((r, i) => (r.label = `run ${i + 1}`));
  const kernels = runs.flatMap((r) => kernelsOf(r.doc));
  const uniq = [...new Map(kernels.map((k) => [`${k.where}|${k.kernel}`, k])).values()];
  const lines: string[] = [
    '# Benchmarks: `synhold bench`',
    '',
    `<!-- Generated from the bench's JSON by \`${command}\`. Do not edit by hand: rerun the bench and this command. -->`,
    '',
    "The seed's experiment (Yelp, *True Zero Downtime HAProxy Reloads*, 2015), rerun strategy by strategy: nginx answering",
    '"pong" on 127.0.0.1:8001, HAProxy in front of it on 127.0.0.1:16000, a client opening a new TCP connection for every',
    'request, and HAProxy reloaded with `-sf` every 100 ms while the load runs (start to start; the real rate is in the',
    'tables). Each strategy runs in a fresh network namespace of its own, with the same servers and the same load; a',
    "no-reload `baseline` gives the added latency. Strategies that need `sch_plug`, which this machine's kernel lacks, run",
    'in the kernel lab (User-Mode Linux, one slow CPU) together with a baseline and `none` there:',
    '**numbers compare within one kernel only**.',
    '',
    '`synhold setup` also sets `net.ipv4.tcp_migrate_req=1` by default, which prevents the resets on its own (that is the',
    '`migrate-req` row). The `drop`, `plug` and `nfqueue` rows are set up with `--migrate-req off`, so that each row',
    'measures one mechanism: the hold alone.',
    '',
    '## Kernels',
    '',
    ...uniq.map((k) => `- **${k.where}**: Linux ${k.kernel}: ${k.description}${k.haproxy ? `; HAProxy ${k.haproxy}` : ''}`),
    '',
    '## Reproduce',
    '',
    'As root, from this repository (after `bash scripts/install-deps.sh`):',
    '',
    '```sh',
    ...[...new Set(runs.map((r) => `node dist/synhold.cjs ${(r.doc.command as string).replace(/^synhold /, '')}`))],
    command,
    '```',
    '',
    `\`synhold bench --quick\` gives every strategy ${QUICK_DURATION_MS / 1000} s of load and at least ${QUICK_MIN_RELOADS} reloads (the load runs on for them, up to ${QUICK_CAP_MS / 1000} s, in a slow kernel lab); \`--full\` is the seed's size`,
    '(1,000,000 requests per strategy and at least 1,500 reloads). `--json` prints the document these pages are made from.',
    '',
    "## The seed's findings, reproduced or contradicted",
    '',
    renderFindings(findings(runs)),
    '## Results',
    '',
    "Columns: requests finished; reloads done and their real rate; the reload command's duration (for the synhold",
    'strategies that is `synhold protect -- haproxy ...` as a whole); how long new connections were held; failed requests',
    '(reset, refused, timed out, or a bad response); latency percentiles of the ok requests, connect start to response end;',
    'added latency against the baseline on the same kernel.',
    '',
    'Reading them:',
    '',
    "- A hold is measured by the tool that holds: synhold's from `synhold protect --report` (its --json result; hold start to",
    "  release, the release coming as soon as the new listener is up and the old one gone); the seed's tooling",
    '  (`plug-spawn`) from the moment `nl-qdisc-add --buffer` returned to the moment `--release-indefinite` returned.',
    '- The reload loop starts a reload every 100 ms *start to start*, or at once when the previous one took longer; the',
    '  real count and rate are in the tables. A slower reload command (a wrapper that starts processes) therefore means',
    '  fewer reloads in the same time, and fewer chances to fail: compare failures per reload too.',
    '- The kernel lab has one CPU, shared by the client, nginx, HAProxy and the tools; every process start costs tens of',
    "  milliseconds there, Node.js's several hundred. Its absolute numbers say little about a real machine; its rows",
    '  compare with each other.',
    '',
    ...runs.map((r, i) => renderRun(r, outDir, i + 1)),
    ...(loadCompare && (!Array.isArray(loadCompare) || loadCompare.length > 0) ? [renderLoadCompare(loadCompare)] : []),
  ];
  return lines.join('\n').replace(/\n{3,}/g, '\n\n') + '\n';
}

function main(argv: string[]): number {
  let out: string | undefined;
  // --load-compare FILE --load-compare-command CMD, once per compare run, paired in order.
  const compareFiles: string[] = [];
  const compareCommands: string[] = [];
  const files: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') out = argv[++i];
    else if (argv[i] === '--load-compare') compareFiles.push(argv[++i]!);
    else if (argv[i] === '--load-compare-command') compareCommands.push(argv[++i]!);
    else files.push(argv[i]!);
  }
  if (!out || files.length === 0 || compareFiles.length !== compareCommands.length) {
    process.stderr.write(
      'usage: node dist/bench/src/docs.js --out docs/BENCHMARKS.md [--load-compare COMPARE.json --load-compare-command CMD]... BENCH.json [BENCH.json ...]\n',
    );
    return 2;
  }
  const runs = files.map(loadRun);
  const loadCompare = compareFiles.map((f, i) => ({ command: compareCommands[i]!, doc: JSON.parse(readFileSync(f, 'utf8')) as LoadCompare['doc'] }));
  const command =
    `node dist/bench/src/docs.js --out ${out}` +
    compareFiles.map((f, i) => ` --load-compare ${f} --load-compare-command '${compareCommands[i]}'`).join('') +
    ` ${files.join(' ')}`;
  writeFileSync(out, renderBenchmarksMd(runs, out, command, loadCompare));
  process.stderr.write(`written ${out}\n`);
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.exitCode = main(process.argv.slice(2));
