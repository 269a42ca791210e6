// Report rendering from synthetic histograms shaped like the seed's results:
// a baseline, plain -sf with resets, drop with a 1 s mode, and a skipped one.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newLatencyHistogram, recordMs, summarizeMs, type Histogram } from '../../bench/src/histogram.js';
import {
  summarize,
  renderTable,
  figureSpec,
  renderSvg,
  toBenchJson,
  reportsFromBenchJson,
  writeReport,
  skippedReport,
  strategyReport,
  isPng,
  type StrategyReport,
} from '../../bench/src/report.js';
import { stats } from '../../bench/src/reloader.js';
import { loadResultToJson, type LoadResult } from '../../bench/src/loadgen.js';

function hist(samples: Array<[ms: number, n: number]>): Histogram {
  const h = newLatencyHistogram();
  for (const [ms, n] of samples) for (let i = 0; i < n; i++) recordMs(h, ms * (1 + (i % 7) * 0.03));
  return h;
}

function rep(
  name: string,
  h: Histogram,
  failed: Partial<Record<'reset' | 'refused' | 'timeout' | 'badResponse', number>>,
  reloads: number,
  baseline = false,
): StrategyReport {
  const failures = { reset: 0, refused: 0, timeout: 0, badResponse: 0, ...failed };
  const nFailed = Object.values(failures).reduce((a, b) => a + b, 0);
  const r: StrategyReport = {
    name,
    requests: h.totalCount + nFailed,
    failed: nFailed,
    failures,
    latency: h,
    reloads,
    reloadRatePerSec: reloads / 10,
    reloadMs: stats(Array.from({ length: reloads }, (_, i) => 50 + (i % 30))),
    holdMs: stats(Array.from({ length: reloads }, (_, i) => 55 + (i % 30))),
    elapsedMs: 10_000,
  };
  if (baseline) r.baseline = true;
  return r;
}

const reports: StrategyReport[] = [
  rep(
    'baseline',
    hist([
      [0.4, 5000],
      [2, 50],
    ]),
    {},
    0,
    true,
  ),
  rep(
    'none',
    hist([
      [0.5, 4900],
      [3, 80],
    ]),
    { reset: 12, refused: 1 },
    100,
  ),
  rep(
    'drop',
    hist([
      [0.5, 4950],
      [1000, 40],
      [3000, 2],
    ]),
    {},
    10,
  ),
  skippedReport('nfqueue', 'kernel has no nfnetlink_queue'),
];

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('table and JSON', () => {
  test('table rows, failure % and added latency against the baseline', () => {
    const rows = summarize(reports);
    const none = rows.find((r) => r.name === 'none')!;
    assert.equal(none.failed, 13);
    assert.ok(Math.abs(none.failedPct - (100 * 13) / none.requests) < 1e-9);
    assert.ok(none.addedMs!.p50 > 0);
    assert.equal(rows.find((r) => r.name === 'baseline')!.addedMs!.p50, 0);
    const drop = rows.find((r) => r.name === 'drop')!;
    assert.ok(drop.latencyMs.max >= 3000 && drop.latencyMs.p999 >= 900, JSON.stringify(drop.latencyMs));
    const t = renderTable(rows);
    for (const n of ['baseline', 'none', 'drop', 'nfqueue', 'p99.9 ms', '+p50']) assert.ok(t.includes(n), n);
    assert.match(t, /none: failures: reset 12, refused 1, timeout 0, badResponse 0/);
    assert.match(t, /nfqueue: skipped: kernel has no nfnetlink_queue/);
  });

  test('issue 5 JSON shape, and plots regenerate from it', () => {
    const j = toBenchJson(reports);
    assert.equal(typeof j.kernel, 'string');
    assert.equal(j.strategies.length, 4);
    for (const s of j.strategies) {
      for (const k of ['name', 'requests', 'failed', 'reloads', 'latencyMs', 'failures', 'holdMs']) assert.ok(k in s, k);
      for (const k of ['p50', 'p99', 'p999', 'max']) assert.ok(k in s.latencyMs, k);
    }
    assert.equal(j.strategies[3]!.skipped, 'kernel has no nfnetlink_queue');
    const back = reportsFromBenchJson(JSON.parse(JSON.stringify(j)));
    assert.equal(summarizeMs(back[2]!.latency).p999, summarizeMs(reports[2]!.latency).p999);
    assert.equal(back[3]!.skipped, 'kernel has no nfnetlink_queue');
  });

  test("strategyReport from a LoadResult's JSON form", () => {
    const h = hist([[1, 100]]);
    const lr = {
      mode: 'closed',
      target: { host: '127.0.0.1', port: 1 },
      startedAt: 0,
      elapsedMs: 1000,
      stoppedBy: 'requests',
      requests: 103,
      outcomes: { ok: 100, reset: 3, refused: 0, timeout: 0, badResponse: 0 },
      failed: 3,
      details: {},
      aborted: 0,
      latency: h,
      failedLatency: newLatencyHistogram(),
      throughput: 103,
    } satisfies LoadResult;
    const r = strategyReport('x', loadResultToJson(lr));
    assert.equal(r.failures.reset, 3);
    assert.equal(r.latency.totalCount, 100);
  });
});

describe('figures', () => {
  test('SVG (Vega-Lite): one panel per strategy with its counts, a log latency axis, p50/p99, failures and the skip reason shown', async () => {
    const spec = figureSpec(reports);
    const panels = (spec.facet as { row: { sort: string[] } }).row.sort;
    assert.equal(panels.length, 4);
    for (const [i, n] of ['baseline', 'none', 'drop', 'nfqueue'].entries()) assert.ok(panels[i]!.startsWith(`${n}:`), panels[i]);
    const svg = await renderSvg(reports);
    assert.ok(svg.startsWith('<svg'));
    for (const p of panels) assert.ok(svg.includes(p.replace(/&/g, '&amp;')), `panel header: ${p}`);
    assert.ok(svg.includes('>1<') && svg.includes('>1,000<'), 'decade ticks on the latency axis (1 ms, 1 s)');
    assert.ok(svg.includes('latency (ms, log scale)'));
    assert.ok(svg.includes('kernel has no nfnetlink_queue'), 'the skip reason');
    assert.ok(svg.includes('failed: reset 12, refused 1'), 'the failures');
    assert.ok(svg.includes('>p50<') && svg.includes('>p99<'), 'the percentile legend');
    const bars = [...svg.matchAll(/<g class="mark-rect role-mark[^>]*>(.*?)<\/g>/gs)].map((m) => (m[1]!.match(/<path/g) ?? []).length);
    assert.equal(bars.length, 4, 'a histogram in every panel');
    assert.ok(bars.reduce((a, b) => a + b, 0) > 10, `histogram bars: ${bars}`);
  });

  test('writeReport: table, JSON, SVG and a real PNG (resvg, fonts from npm: no Debian package)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'synhold-report-test-'));
    dirs.push(dir);
    const w = await writeReport(dir, reports, { jsonExtra: { note: 'synthetic' } });
    assert.ok(existsSync(w.files.table) && existsSync(w.files.json) && existsSync(w.files.svg));
    assert.equal(JSON.parse(readFileSync(w.files.json, 'utf8')).note, 'synthetic');
    assert.ok(isPng(w.files.png), 'PNG magic');
    assert.ok(readFileSync(w.files.png).length > 5000);
  });
});
