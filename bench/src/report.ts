// Turning bench results into what a person reads: a plain-text table per
// strategy, the issue's JSON document, and latency histograms (SVG from a
// Vega-Lite specification, and PNG through resvg) like the seed's Figures 2 and 3.
//
// WHY a log-scale latency axis: the interesting features are orders of
// magnitude apart — sub-millisecond loopback requests, the plug's tens of ms
// hold, and the drop strategy's 1 s (and 2 s, 3 s…) SYN-retransmit modes. WHY
// log-scale counts too: those modes hold under 1% of requests; on a linear
// count axis they would be invisible next to the main peak, and seeing them is
// the point of the figure.
//
// One panel per strategy, all panels on the same latency axis so they compare
// at a glance. Everything the figures need comes from npm (Vega, Vega-Lite,
// resvg's prebuilt binary, the DejaVu fonts): no Debian package.

import { writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { release } from 'node:os';
import { summarizeMs, histogramPoints, newLatencyHistogram, encodeHistogram, decodeHistogram, type Histogram, type LatencySummaryMs } from './histogram.js';
import { FAILURE_OUTCOMES, type FailureOutcome, type LoadResult, type LoadResultJson } from './loadgen.js';
import { stats, type ReloadLoopResult, type Stats } from './reloader.js';
import type { Attribution, SlowPlacement } from './attribution.js';
import type { DrainSummary } from './strategies/strategy.js';

/** Everything the report needs about one strategy's run. */
export interface StrategyReport {
  name: string;
  /** set when the strategy could not run on this kernel/machine: why */
  skipped?: string;
  /** the no-reload baseline, against which "added latency" is computed */
  baseline?: boolean;
  requests: number;
  failed: number;
  failures: Record<FailureOutcome, number>;
  /** latency of ok requests (µs HDR histogram) */
  latency: Histogram;
  reloads: number;
  reloadRatePerSec: number;
  /** reload command durations, ms */
  reloadMs: Stats;
  /** hold durations (before hook start → after hook end), ms */
  holdMs: Stats;
  elapsedMs: number;
  note?: string;
  /** where it ran ("host": this machine's kernel, "lab": the kernel lab) and on which kernel
   * (uname -r): added latency is measured against the baseline of the same where + kernel */
  where?: string;
  kernel?: string;
  /** panel title in the figure (default: name) */
  label?: string;
  /** reloads that failed (the reload command, or a hook around it) */
  reloadFailures?: number;
  /** nominal start-to-start reload interval, ms */
  intervalMs?: number;
  /** tried to run and broke (unlike skipped: could not run here) */
  error?: string;
  /** SYNs released / dropped by the holds, and why the holds ended */
  hold?: { source: string; released?: number; dropped?: number; reasons?: Record<string, number>; swapToReleaseMs?: Stats; drain?: DrainSummary };
  /** failure detail codes (ECONNRESET, status-503, ...) */
  details?: Record<string, number>;
  /** requests per second over the run */
  throughput?: number;
  notes?: string[];
  /** failed requests charged to the reloads they started during (attribution.ts) */
  attribution?: Attribution;
  /** the slow ok requests, placed in their reloads and holds (attribution.ts) */
  slow?: SlowPlacement;
  /** the namespace's watched kernel counters that moved during the load (kernel-counters.ts) */
  counters?: Record<string, number>;
}

/** Same kernel, same place: the only rows whose numbers compare. */
export const kernelKey = (r: { where?: string; kernel?: string }): string => `${r.where ?? ''}|${r.kernel ?? ''}`;

const emptyStats = (): Stats => stats([]);

/** Build a StrategyReport from a load run (live or JSON form) and its reload loop. */
export function strategyReport(
  name: string,
  load: LoadResult | LoadResultJson,
  reloads?: ReloadLoopResult,
  extra: { baseline?: boolean; note?: string } = {},
): StrategyReport {
  const latency = 'latency' in load ? load.latency : decodeHistogram(load.latencyHdr);
  const failures = Object.fromEntries(FAILURE_OUTCOMES.map((k) => [k, load.outcomes[k]])) as Record<FailureOutcome, number>;
  const r: StrategyReport = {
    name,
    requests: load.requests,
    failed: load.failed,
    failures,
    latency,
    reloads: reloads?.count ?? 0,
    reloadRatePerSec: reloads?.ratePerSec ?? 0,
    reloadMs: reloads?.durationMs ?? emptyStats(),
    holdMs: reloads?.holdMs ?? emptyStats(),
    elapsedMs: load.elapsedMs,
  };
  if (extra.baseline) r.baseline = true;
  if (extra.note !== undefined) r.note = extra.note;
  return r;
}

/** A strategy that could not run: reported as such, never silently dropped. */
export function skippedReport(name: string, reason: string): StrategyReport {
  const z = { count: 0, min: 0, mean: 0, p50: 0, p99: 0, max: 0 };
  return {
    name,
    skipped: reason,
    requests: 0,
    failed: 0,
    failures: { reset: 0, refused: 0, timeout: 0, badResponse: 0 },
    latency: emptyHist(),
    reloads: 0,
    reloadRatePerSec: 0,
    reloadMs: z,
    holdMs: z,
    elapsedMs: 0,
  };
}

const emptyHist = (): Histogram => newLatencyHistogram();

export interface SummaryRow {
  name: string;
  skipped?: string;
  requests: number;
  failed: number;
  failedPct: number;
  failures: Record<FailureOutcome, number>;
  reloads: number;
  reloadRatePerSec: number;
  reloadMs: Stats;
  holdMs: Stats;
  latencyMs: LatencySummaryMs;
  /** this strategy's ok-latency percentiles minus the baseline's (ms), if a baseline ran */
  addedMs?: { p50: number; p99: number; p999: number };
}

const r3 = (x: number): number => Math.round(x * 1000) / 1000;

export function summarize(reports: StrategyReport[]): SummaryRow[] {
  // One baseline per kernel: rows from another kernel are not compared with it.
  const baseLats = new Map<string, LatencySummaryMs>();
  for (const r of reports) {
    if (r.baseline && !r.skipped && !baseLats.has(kernelKey(r))) baseLats.set(kernelKey(r), summarizeMs(r.latency));
  }
  return reports.map((r) => {
    const baseLat = baseLats.get(kernelKey(r));
    const lat = summarizeMs(r.latency);
    const row: SummaryRow = {
      name: r.name,
      requests: r.requests,
      failed: r.failed,
      failedPct: r.requests > 0 ? (100 * r.failed) / r.requests : 0,
      failures: r.failures,
      reloads: r.reloads,
      reloadRatePerSec: r.reloadRatePerSec,
      reloadMs: r.reloadMs,
      holdMs: r.holdMs,
      latencyMs: lat,
    };
    if (r.skipped !== undefined) row.skipped = r.skipped;
    if (baseLat && baseLat.count > 0 && lat.count > 0 && !r.skipped) {
      row.addedMs = { p50: r3(lat.p50 - baseLat.p50), p99: r3(lat.p99 - baseLat.p99), p999: r3(lat.p999 - baseLat.p999) };
    }
    return row;
  });
}

// ---------------------------------------------------------------- text table

/** Milliseconds, compact: 0.123, 12.3, 1003 */
export function fmtMs(ms: number): string {
  if (ms === 0) return '0';
  const a = Math.abs(ms);
  if (a < 1) return ms.toFixed(3);
  if (a < 10) return ms.toFixed(2);
  if (a < 100) return ms.toFixed(1);
  return ms.toFixed(0);
}

export function fmtPct(p: number): string {
  if (p === 0) return '0%';
  if (p < 0.01) return `${p.toFixed(4)}%`;
  return `${p.toFixed(2)}%`;
}

const signed = (ms: number): string => (ms >= 0 ? `+${fmtMs(ms)}` : fmtMs(ms));
const fmtInt = (n: number): string => n.toLocaleString('en');

/**
 * One strategy's row of the results table, as cells, for the terminal (`text`) or
 * for Markdown (`md`: thousands separators, the name and any failures in bold).
 * Both tables (renderTable, and docs.ts's page) are made from these.
 */
export function resultCells(r: SummaryRow, style: 'text' | 'md'): string[] {
  const md = style === 'md';
  const int = md ? fmtInt : String;
  const pair = (a: number, b: number): string => (md ? `${fmtMs(a)} / ${fmtMs(b)}` : `${fmtMs(a)}/${fmtMs(b)}`);
  return [
    md ? `**${r.name}**` : r.name,
    int(r.requests),
    int(r.reloads),
    r.reloads > 0 ? r.reloadRatePerSec.toFixed(2) : '-',
    r.reloads > 0 ? pair(r.reloadMs.p50, r.reloadMs.max) : '-',
    r.holdMs.count > 0 && r.reloads > 0 ? pair(r.holdMs.p50, r.holdMs.max) : '-',
    md && r.failed > 0 ? `**${fmtInt(r.failed)}**` : String(r.failed),
    fmtPct(r.failedPct),
    fmtMs(r.latencyMs.p50),
    fmtMs(r.latencyMs.p99),
    fmtMs(r.latencyMs.p999),
    fmtMs(r.latencyMs.max),
    r.addedMs ? signed(r.addedMs.p50) : '-',
    r.addedMs ? signed(r.addedMs.p99) : '-',
    r.addedMs ? signed(r.addedMs.p999) : '-',
  ];
}

/** A plain-text table, one row per strategy, then one failure breakdown line per strategy with failures or a skip reason. */
export function renderTable(rows: SummaryRow[]): string {
  const header = [
    'strategy',
    'requests',
    'reloads',
    'rel/s',
    'reload ms p50/max',
    'hold ms p50/max',
    'failed',
    'failed%',
    'p50 ms',
    'p99 ms',
    'p99.9 ms',
    'max ms',
    '+p50',
    '+p99',
    '+p99.9',
  ];
  const body = rows.map((r) => (r.skipped !== undefined ? [r.name, ...header.slice(1).map(() => '-')] : resultCells(r, 'text')));
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  const out = [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)];
  const notes: string[] = [];
  for (const r of rows) {
    if (r.skipped !== undefined) notes.push(`${r.name}: skipped: ${r.skipped}`);
    else if (r.failed > 0) {
      notes.push(`${r.name}: failures: ${FAILURE_OUTCOMES.map((k) => `${k} ${r.failures[k]}`).join(', ')}`);
    }
  }
  if (notes.length > 0) out.push('', ...notes);
  out.push('', 'latency: ok requests, connect start to response end; +p50/+p99/+p99.9: added vs the no-reload baseline run on the same kernel');
  return out.join('\n') + '\n';
}

/**
 * One table per kernel (rows compare within a kernel only), each under its
 * header line; `headers` maps kernelKey(report) to that line. Rows whose
 * kernel has no header (could not run anywhere) come last, in a table of
 * their own.
 */
export function renderKernelTables(reports: StrategyReport[], headers: Map<string, string>): string {
  const rows = summarize(reports);
  const groups = new Map<string, SummaryRow[]>();
  reports.forEach((r, i) => {
    const k = headers.has(kernelKey(r)) ? kernelKey(r) : '';
    groups.set(k, [...(groups.get(k) ?? []), rows[i]!]);
  });
  const out: string[] = [];
  for (const [k, rs] of [...groups].sort((a, b) => (a[0] === '' ? 1 : b[0] === '' ? -1 : 0))) {
    out.push(k === '' ? 'could not run here:' : headers.get(k)!, '', renderTable(rs));
  }
  return out.join('\n');
}

// ---------------------------------------------------------------- JSON (issue 5's document)

export interface BenchJsonStrategy {
  name: string;
  requests: number;
  failed: number;
  failedPct: number;
  reloads: number;
  reloadRatePerSec: number;
  latencyMs: { p50: number; p99: number; p999: number; max: number };
  failures: Record<FailureOutcome, number>;
  holdMs: Stats;
  reloadMs: Stats;
  addedMs?: { p50: number; p99: number; p999: number };
  /** lossless HDR histogram (µs) of ok latencies */
  latencyHdr?: string;
  skipped?: string;
  baseline?: boolean;
  /** "host" or "lab", and the kernel (uname -r) it ran on */
  where?: string;
  kernel?: string;
  error?: string;
  reloadFailures?: number;
  intervalMs?: number;
  hold?: StrategyReport['hold'];
  details?: Record<string, number>;
  throughput?: number;
  elapsedMs?: number;
  notes?: string[];
  failureAttribution?: Attribution;
  slow?: SlowPlacement;
  counters?: Record<string, number>;
}

export interface BenchJson {
  kernel: string;
  strategies: BenchJsonStrategy[];
  [k: string]: unknown;
}

export function toBenchJson(reports: StrategyReport[], extra: Record<string, unknown> = {}): BenchJson {
  const rows = summarize(reports);
  return {
    kernel: release(),
    ...extra,
    strategies: rows.map((row, i) => {
      const rep = reports[i]!;
      const s: BenchJsonStrategy = {
        name: row.name,
        requests: row.requests,
        failed: row.failed,
        failedPct: r3(row.failedPct),
        reloads: row.reloads,
        reloadRatePerSec: r3(row.reloadRatePerSec),
        latencyMs: { p50: row.latencyMs.p50, p99: row.latencyMs.p99, p999: row.latencyMs.p999, max: row.latencyMs.max },
        failures: row.failures,
        holdMs: row.holdMs,
        reloadMs: row.reloadMs,
      };
      if (row.addedMs) s.addedMs = row.addedMs;
      if (rep.baseline) s.baseline = true;
      if (rep.where !== undefined) s.where = rep.where;
      if (rep.kernel !== undefined) s.kernel = rep.kernel;
      if (rep.error !== undefined) s.error = rep.error;
      if (rep.reloadFailures !== undefined) s.reloadFailures = rep.reloadFailures;
      if (rep.intervalMs !== undefined) s.intervalMs = rep.intervalMs;
      if (rep.hold !== undefined) s.hold = rep.hold;
      if (rep.details !== undefined) s.details = rep.details;
      if (rep.throughput !== undefined) s.throughput = Math.round(rep.throughput);
      if (rep.elapsedMs > 0) s.elapsedMs = Math.round(rep.elapsedMs);
      if (rep.notes !== undefined && rep.notes.length > 0) s.notes = rep.notes;
      if (rep.attribution !== undefined) s.failureAttribution = rep.attribution;
      if (rep.slow !== undefined) s.slow = rep.slow;
      if (rep.counters !== undefined) s.counters = rep.counters;
      if (row.skipped !== undefined) s.skipped = row.skipped;
      else s.latencyHdr = encodeHistogram(rep.latency);
      return s;
    }),
  };
}

/** Rebuild StrategyReports from a BenchJson (so plots can be regenerated from the raw data). */
export function reportsFromBenchJson(doc: BenchJson): StrategyReport[] {
  return doc.strategies.map((s) => {
    const placed = (r: StrategyReport): StrategyReport => {
      if (s.where !== undefined) r.where = s.where;
      if (s.kernel !== undefined) r.kernel = s.kernel;
      if (s.error !== undefined) r.error = s.error;
      if (s.reloadFailures !== undefined) r.reloadFailures = s.reloadFailures;
      if (s.intervalMs !== undefined) r.intervalMs = s.intervalMs;
      if (s.hold !== undefined) r.hold = s.hold;
      if (s.details !== undefined) r.details = s.details;
      if (s.throughput !== undefined) r.throughput = s.throughput;
      if (s.notes !== undefined) r.notes = s.notes;
      if (s.elapsedMs !== undefined) r.elapsedMs = s.elapsedMs;
      if (s.failureAttribution !== undefined) r.attribution = s.failureAttribution;
      if (s.slow !== undefined) r.slow = s.slow;
      if (s.counters !== undefined) r.counters = s.counters;
      if (s.baseline) r.baseline = true;
      return r;
    };
    if (s.skipped !== undefined) return placed(skippedReport(s.name, s.skipped));
    const r: StrategyReport = {
      name: s.name,
      requests: s.requests,
      failed: s.failed,
      failures: s.failures,
      latency: s.latencyHdr ? decodeHistogram(s.latencyHdr) : emptyHist(),
      reloads: s.reloads,
      reloadRatePerSec: s.reloadRatePerSec,
      reloadMs: s.reloadMs,
      holdMs: s.holdMs,
      elapsedMs: 0,
    };
    return placed(r);
  });
}

// ---------------------------------------------------------------- figures

export interface SvgOptions {
  title?: string;
  /** width of each panel's plot area, px (default 760) */
  width?: number;
  /** height of each panel's plot area, px (default 130) */
  panelHeight?: number;
  /** histogram bins per decade of latency (default 20) */
  binsPerDecade?: number;
}

/** One row of the figure's data: a histogram bin, a percentile line, a failure note, or why a strategy did not run. */
type FigureDatum =
  | { kind: 'bin'; panel: string; lo: number; hi: number; count: number }
  | { kind: 'pct'; panel: string; ms: number; q: 'p50' | 'p99' }
  | { kind: 'note'; panel: string; text: string };

/**
 * The figure as a Vega-Lite specification (declarative, rendered by Vega): one
 * panel per strategy, like the seed's Figures 2 and 3, all on the same
 * log-scale latency axis, each with a log-scale count axis, p50 and p99
 * marked, failures or the reason a strategy did not run written in the panel.
 */
export function figureSpec(reports: StrategyReport[], o: SvgOptions = {}): Record<string, unknown> {
  const perDecade = o.binsPerDecade ?? 20;
  const rows = summarize(reports);
  const ran = reports.filter((r) => !r.skipped && r.latency.totalCount > 0);
  let lo = Infinity;
  let hi = -Infinity;
  for (const r of ran) {
    const s = summarizeMs(r.latency);
    lo = Math.min(lo, Math.max(s.min, 0.001));
    hi = Math.max(hi, s.max);
  }
  if (!Number.isFinite(lo)) {
    lo = 0.01;
    hi = 10_000;
  }
  const d0 = Math.floor(Math.log10(lo));
  const d1 = Math.max(d0 + 1, Math.ceil(Math.log10(hi * 1.0001)));
  const nb = (d1 - d0) * perDecade;

  const data: FigureDatum[] = [];
  const panels: string[] = [];
  reports.forEach((rep, i) => {
    const row = rows[i]!;
    const label = rep.label ?? rep.name;
    const panel = rep.skipped
      ? `${label}: did not run`
      : `${label}: ${fmtInt(row.requests)} requests, ${fmtInt(row.failed)} failed (${fmtPct(row.failedPct)}), ${row.reloads} reloads` +
        (row.latencyMs.count > 0 ? `, p50 ${fmtMs(row.latencyMs.p50)} ms, p99 ${fmtMs(row.latencyMs.p99)} ms` : '');
    panels.push(panel);
    if (rep.skipped) {
      data.push({ kind: 'note', panel, text: rep.skipped.length > 150 ? `${rep.skipped.slice(0, 147)}...` : rep.skipped });
      return;
    }
    // Re-bin the HDR buckets onto log-spaced bins.
    const bins = new Array<number>(nb).fill(0);
    for (const p of histogramPoints(rep.latency)) {
      const b = Math.floor((Math.log10(Math.max(p.ms, 10 ** d0)) - d0) * perDecade);
      bins[Math.min(nb - 1, Math.max(0, b))]! += p.count;
    }
    bins.forEach((count, b) => {
      if (count > 0) data.push({ kind: 'bin', panel, lo: 10 ** (d0 + b / perDecade), hi: 10 ** (d0 + (b + 1) / perDecade), count });
    });
    if (row.latencyMs.count > 0) {
      data.push({ kind: 'pct', panel, ms: Math.max(row.latencyMs.p50, 10 ** d0), q: 'p50' });
      data.push({ kind: 'pct', panel, ms: Math.max(row.latencyMs.p99, 10 ** d0), q: 'p99' });
    }
    if (row.failed > 0) {
      const f = FAILURE_OUTCOMES.filter((k) => row.failures[k] > 0)
        .map((k) => `${k} ${row.failures[k]}`)
        .join(', ');
      data.push({ kind: 'note', panel, text: `failed: ${f}` });
    }
  });

  const width = o.width ?? 760;
  const height = o.panelHeight ?? 130;
  const x = { field: 'lo', type: 'quantitative', scale: { type: 'log', domain: [10 ** d0, 10 ** d1] }, title: 'latency (ms, log scale)' };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: o.title ?? 'Request latency during HAProxy reloads',
      subtitle: 'ok requests, connect start to response end; log-scale latency and count; dashed: p50 and p99',
    },
    data: { values: data },
    facet: {
      row: {
        field: 'panel',
        type: 'nominal',
        sort: panels,
        title: null,
        header: { labelAngle: 0, labelAlign: 'left', labelAnchor: 'start', labelOrient: 'top', labelFontWeight: 'bold', labelFontSize: 12 },
      },
    },
    spec: {
      width,
      height,
      layer: [
        {
          transform: [{ filter: "datum.kind === 'bin'" }],
          mark: { type: 'rect', color: '#4a7fb5' },
          encoding: {
            x,
            x2: { field: 'hi' },
            // A log count axis (single requests still show: bars start below 1).
            y: { field: 'count', type: 'quantitative', scale: { type: 'log', domainMin: 0.7 }, axis: { format: '~s', tickCount: 5 }, title: 'requests' },
            y2: { datum: 0.7 },
            tooltip: [{ field: 'lo', format: '.3~g' }, { field: 'hi', format: '.3~g' }, { field: 'count' }],
          },
        },
        {
          transform: [{ filter: "datum.kind === 'pct'" }],
          mark: { type: 'rule', strokeDash: [4, 3] },
          encoding: {
            x: { field: 'ms', type: 'quantitative' },
            color: { field: 'q', type: 'nominal', title: 'percentile', scale: { domain: ['p50', 'p99'], range: ['#1f4fd6', '#d62728'] } },
          },
        },
        {
          transform: [{ filter: "datum.kind === 'note'" }],
          mark: { type: 'text', align: 'right', baseline: 'top', color: '#a00', dx: -6, dy: 6 },
          encoding: { text: { field: 'text' }, x: { value: width }, y: { value: 0 } },
        },
      ],
    },
    resolve: { scale: { y: 'independent' } },
    config: { font: FIGURE_FONT, view: { stroke: '#999' } },
  };
}

const FIGURE_FONT = 'DejaVu Sans';

/** The figure as SVG (Vega renders it headless, no canvas or browser). */
export async function renderSvg(reports: StrategyReport[], o: SvgOptions = {}): Promise<string> {
  const [vega, { compile }] = await Promise.all([import('vega'), import('vega-lite')]);
  const view = new vega.View(vega.parse(compile(figureSpec(reports, o) as never).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

// ---------------------------------------------------------------- PNG

/** The DejaVu fonts from npm (dejavu-fonts-ttf): a PNG's text needs no font installed on the machine. */
function figureFontFiles(): string[] {
  const dir = join(dirname(createRequire(import.meta.url).resolve('dejavu-fonts-ttf/package.json')), 'ttf');
  return ['DejaVuSans.ttf', 'DejaVuSans-Bold.ttf'].map((f) => join(dir, f));
}

/** An SVG rendered to PNG with resvg (a Rust renderer shipped prebuilt through npm), on white. */
export async function svgToPng(svg: string, opts: { zoom?: number } = {}): Promise<Buffer> {
  const { Resvg } = await import('@resvg/resvg-js');
  const r = new Resvg(svg, {
    background: 'white',
    fitTo: { mode: 'zoom', value: opts.zoom ?? 1 },
    font: { loadSystemFonts: false, fontFiles: figureFontFiles(), defaultFontFamily: FIGURE_FONT },
  });
  return r.render().asPng();
}

export const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export function isPng(path: string): boolean {
  try {
    return readFileSync(path).subarray(0, 8).equals(PNG_MAGIC);
  } catch {
    return false;
  }
}

export interface WrittenReport {
  table: string;
  json: BenchJson;
  files: { table: string; json: string; svg: string; png: string };
}

/** Write table.txt, bench.json, latency.svg and latency.png into `dir`. */
export async function writeReport(
  dir: string,
  reports: StrategyReport[],
  o: { svg?: SvgOptions; jsonExtra?: Record<string, unknown>; table?: string } = {},
): Promise<WrittenReport> {
  mkdirSync(dir, { recursive: true });
  const table = o.table ?? renderTable(summarize(reports));
  const json = toBenchJson(reports, o.jsonExtra);
  const files: WrittenReport['files'] = {
    table: join(dir, 'table.txt'),
    json: join(dir, 'bench.json'),
    svg: join(dir, 'latency.svg'),
    png: join(dir, 'latency.png'),
  };
  writeFileSync(files.table, table);
  writeFileSync(files.json, JSON.stringify(json, null, 2) + '\n');
  const svg = await renderSvg(reports, o.svg);
  writeFileSync(files.svg, svg);
  writeFileSync(files.png, await svgToPng(svg));
  return { table, json, files };
}
