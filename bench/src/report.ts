// Turning bench results into what a person reads: a plain-text table per
// strategy, the issue's JSON document, and latency histograms (SVG, and PNG
// through rsvg-convert) like the seed's Figures 2 and 3.
//
// WHY a log-scale latency axis: the interesting features are orders of
// magnitude apart — sub-millisecond loopback requests, the plug's tens of ms
// hold, and the drop strategy's 1 s (and 2 s, 3 s…) SYN-retransmit modes. WHY
// log-scale counts too: those modes hold under 1% of requests; on a linear
// count axis they would be invisible next to the main peak, and seeing them is
// the point of the figure.
//
// The SVG is hand-written (no plotting dependency): one panel per strategy, all
// panels on the same latency axis so they compare at a glance.

import { spawnSync } from 'node:child_process';
import { writeFileSync, mkdirSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { release } from 'node:os';
import { summarizeMs, histogramPoints, newLatencyHistogram, encodeHistogram, decodeHistogram, type Histogram, type LatencySummaryMs } from './histogram.js';
import { FAILURE_OUTCOMES, type FailureOutcome, type LoadResult, type LoadResultJson } from './loadgen.js';
import { stats, type ReloadLoopResult, type Stats } from './reloader.js';
import type { Attribution } from './attribution.js';

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
  hold?: { source: string; released?: number; dropped?: number; reasons?: Record<string, number> };
  /** failure detail codes (ECONNRESET, status-503, ...) */
  details?: Record<string, number>;
  /** requests per second over the run */
  throughput?: number;
  notes?: string[];
  /** failed requests charged to the reloads they started during (attribution.ts) */
  attribution?: Attribution;
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

// ---------------------------------------------------------------- SVG

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export interface SvgOptions {
  title?: string;
  width?: number;
  panelHeight?: number;
  /** histogram bins per decade of latency (default 20) */
  binsPerDecade?: number;
}

function fmtAxisMs(ms: number): string {
  if (ms >= 1000) return `${ms / 1000} s`;
  if (ms >= 1) return `${ms} ms`;
  return `${ms} ms`;
}

/**
 * One panel per strategy: a histogram of ok-request latencies, log-scale
 * latency (x, shared by all panels) and log-scale count (y), with p50 and p99
 * marked, and the failed count in the panel's title.
 */
export function renderSvg(reports: StrategyReport[], o: SvgOptions = {}): string {
  const W = o.width ?? 900;
  const PH = o.panelHeight ?? 190;
  const top = 50;
  const left = 70;
  const right = 20;
  const plotW = W - left - right;
  const perDecade = o.binsPerDecade ?? 20;
  const rows = summarize(reports);

  // Shared x range: whole decades around every strategy's min..max.
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
  const xOf = (ms: number): number => left + ((Math.log10(ms) - d0) / (d1 - d0)) * plotW;

  const H = top + reports.length * PH + 24;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Arial, sans-serif">`,
    `<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">${esc(o.title ?? 'Request latency during HAProxy reloads')}</text>`,
    `<text x="${W / 2}" y="42" text-anchor="middle" font-size="11" fill="#555">ok requests, connect start to response end; log-scale latency and count; dashed: p50 (blue), p99 (red)</text>`,
  );

  reports.forEach((rep, i) => {
    const row = rows[i]!;
    const y0 = top + i * PH;
    const plotTop = y0 + 24;
    const plotH = PH - 60;
    const base = plotTop + plotH;
    out.push(`<g class="panel" data-strategy="${esc(rep.name)}"${rep.where ? ` data-where="${esc(rep.where)}"` : ''}>`);
    const label = rep.label ?? rep.name;
    const title = rep.skipped
      ? `${label} — skipped`
      : `${label} — ${row.requests} requests, ${row.failed} failed (${fmtPct(row.failedPct)}), ${row.reloads} reloads` +
        (row.latencyMs.count > 0 ? `, p50 ${fmtMs(row.latencyMs.p50)} ms, p99 ${fmtMs(row.latencyMs.p99)} ms` : '');
    out.push(`<text x="${left}" y="${y0 + 16}" font-size="13" font-weight="bold">${esc(title)}</text>`);
    out.push(`<rect x="${left}" y="${plotTop}" width="${plotW}" height="${plotH}" fill="#fafafa" stroke="#999" stroke-width="0.5"/>`);
    if (rep.skipped) {
      // Long reasons wrap over a few lines (SVG text does not wrap by itself).
      const words = rep.skipped.split(' ');
      const lines: string[] = [''];
      for (const w of words) {
        if ((lines[lines.length - 1]! + ' ' + w).length > 110 && lines[lines.length - 1]!.length > 0) lines.push(w);
        else lines[lines.length - 1] = `${lines[lines.length - 1]} ${w}`.trim();
      }
      lines.slice(0, 6).forEach((l, k) => {
        const y = plotTop + plotH / 2 - ((Math.min(lines.length, 6) - 1) * 14) / 2 + k * 14;
        out.push(`<text x="${left + plotW / 2}" y="${y.toFixed(1)}" text-anchor="middle" font-size="11" fill="#a00">${esc(l)}</text>`);
      });
    } else {
      // Re-bin the HDR buckets onto log-spaced bins.
      const bins = new Array<number>(nb).fill(0);
      for (const p of histogramPoints(rep.latency)) {
        const b = Math.floor((Math.log10(Math.max(p.ms, 10 ** d0)) - d0) * perDecade);
        bins[Math.min(nb - 1, Math.max(0, b))]! += p.count;
      }
      const maxC = Math.max(1, ...bins);
      const yDec = Math.max(1, Math.ceil(Math.log10(maxC)));
      // log count axis: count 1 sits a little above the baseline so single requests show
      const yOf = (c: number): number => base - ((Math.log10(c) + 0.3) / (yDec + 0.3)) * plotH;
      for (let k = 0; k <= yDec; k++) {
        const y = yOf(10 ** k);
        out.push(`<line x1="${left}" x2="${left + plotW}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#e3e3e3" stroke-width="0.5"/>`);
        out.push(`<text x="${left - 5}" y="${(y + 4).toFixed(1)}" text-anchor="end" font-size="10">${10 ** k >= 1000 ? `1e${k}` : 10 ** k}</text>`);
      }
      bins.forEach((c, b) => {
        if (c === 0) return;
        const x0 = left + (b / nb) * plotW;
        const w = plotW / nb;
        const y = yOf(c);
        out.push(
          `<rect class="bar" x="${x0.toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(0.5, w - 0.6).toFixed(1)}" height="${(base - y).toFixed(1)}" fill="#4a7fb5"><title>${fmtMs(10 ** (d0 + b / perDecade))}–${fmtMs(10 ** (d0 + (b + 1) / perDecade))} ms: ${c}</title></rect>`,
        );
      });
      if (row.latencyMs.count > 0) {
        for (const [v, col] of [
          [row.latencyMs.p50, '#1f4fd6'],
          [row.latencyMs.p99, '#d62728'],
        ] as const) {
          const x = xOf(Math.max(v, 10 ** d0));
          out.push(`<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${plotTop}" y2="${base}" stroke="${col}" stroke-width="1" stroke-dasharray="4,3"/>`);
        }
      }
      if (row.failed > 0) {
        const f = FAILURE_OUTCOMES.filter((k) => row.failures[k] > 0)
          .map((k) => `${k} ${row.failures[k]}`)
          .join(', ');
        out.push(`<text x="${left + plotW - 6}" y="${plotTop + 14}" text-anchor="end" font-size="11" fill="#a00">failed: ${esc(f)}</text>`);
      }
    }
    // x axis ticks (every panel, so each reads on its own)
    for (let d = d0; d <= d1; d++) {
      const x = xOf(10 ** d);
      out.push(`<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${base}" y2="${base + 4}" stroke="#333"/>`);
      out.push(`<text x="${x.toFixed(1)}" y="${base + 15}" text-anchor="middle" font-size="10">${fmtAxisMs(Number((10 ** d).toPrecision(1)))}</text>`);
    }
    out.push(
      `<text x="${left - 50}" y="${plotTop + plotH / 2}" font-size="10" transform="rotate(-90 ${left - 50} ${plotTop + plotH / 2})" text-anchor="middle">requests</text>`,
    );
    out.push('</g>');
  });
  out.push(`<text x="${left + plotW / 2}" y="${H - 8}" text-anchor="middle" font-size="12">latency (log scale)</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------- PNG

export class RsvgMissingError extends Error {
  constructor() {
    super('rsvg-convert not found: install the Debian package librsvg2-bin (apt-get install librsvg2-bin) to get PNG plots; the SVG is written regardless');
    this.name = 'RsvgMissingError';
  }
}

/** Convert an SVG file to PNG with rsvg-convert. Throws RsvgMissingError when it is not installed. */
export function svgToPng(svgPath: string, pngPath: string, opts: { zoom?: number; timeoutMs?: number } = {}): void {
  const r = spawnSync('rsvg-convert', ['-f', 'png', '-z', String(opts.zoom ?? 1), '-b', 'white', '-o', pngPath, svgPath], {
    timeout: opts.timeoutMs ?? 30_000,
    encoding: 'utf8',
  });
  if (r.error) {
    if ((r.error as NodeJS.ErrnoException).code === 'ENOENT') throw new RsvgMissingError();
    throw r.error;
  }
  if (r.status !== 0) throw new Error(`rsvg-convert failed (exit ${r.status}): ${r.stderr}`);
  if (!existsSync(pngPath)) throw new Error(`rsvg-convert wrote no ${pngPath}`);
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
  files: { table: string; json: string; svg: string; png?: string };
  /** e.g. why there is no PNG */
  warnings: string[];
}

/** Write table.txt, bench.json, latency.svg and latency.png into `dir`. */
export function writeReport(
  dir: string,
  reports: StrategyReport[],
  o: { svg?: SvgOptions; jsonExtra?: Record<string, unknown>; table?: string } = {},
): WrittenReport {
  mkdirSync(dir, { recursive: true });
  const table = o.table ?? renderTable(summarize(reports));
  const json = toBenchJson(reports, o.jsonExtra);
  const files: WrittenReport['files'] = {
    table: join(dir, 'table.txt'),
    json: join(dir, 'bench.json'),
    svg: join(dir, 'latency.svg'),
  };
  writeFileSync(files.table, table);
  writeFileSync(files.json, JSON.stringify(json, null, 2) + '\n');
  writeFileSync(files.svg, renderSvg(reports, o.svg));
  const warnings: string[] = [];
  const png = join(dir, 'latency.png');
  try {
    svgToPng(files.svg, png);
    files.png = png;
  } catch (e) {
    warnings.push(e instanceof Error ? e.message : String(e));
  }
  return { table, json, files, warnings };
}
