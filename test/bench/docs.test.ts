// docs/BENCHMARKS.md's generator, on synthetic bench documents shaped like the
// seed's results: each finding's verdict follows the numbers, both ways.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newLatencyHistogram, recordMs, type Histogram } from '../../bench/src/histogram.js';
import { toBenchJson, type StrategyReport } from '../../bench/src/report.js';
import { stats } from '../../bench/src/reloader.js';
import { findings, renderBenchmarksMd, runFromDoc, slowCount, mdTable, type LoadCompare } from '../../bench/src/docs.js';
import { parseCompareArgs } from '../../bench/src/load/compare.js';
import { summarize } from '../../bench/src/report.js';

function hist(samples: Array<[ms: number, n: number]>): Histogram {
  const h = newLatencyHistogram();
  for (const [ms, n] of samples) for (let i = 0; i < n; i++) recordMs(h, ms * (1 + (i % 5) * 0.02));
  return h;
}

function rep(name: string, where: 'host' | 'lab', h: Histogram, failed: number, reloads: number, holdP50 = 0): StrategyReport {
  return {
    name,
    where,
    kernel: where === 'host' ? '6.18.0' : '6.1.176',
    requests: h.totalCount + failed,
    failed,
    failures: { reset: failed, refused: 0, timeout: 0, badResponse: 0 },
    latency: h,
    reloads,
    reloadRatePerSec: reloads / 10,
    reloadMs: stats(reloads ? [50, 60, 70] : []),
    holdMs: stats(holdP50 ? [holdP50, holdP50 + 10] : []),
    elapsedMs: 10_000,
    ...(name === 'baseline' ? { baseline: true } : {}),
    ...(holdP50 ? { hold: { source: 'test', released: 12, dropped: 0, reasons: { 'command exited': 2 } } } : {}),
  };
}

const kernels = [
  { where: 'host', kernel: '6.18.0', cpus: 2, description: "this machine's kernel, 2 CPUs" },
  { where: 'lab', kernel: '6.1.176', cpus: 1, description: 'kernel lab', reason: 'plug needs sch_plug' },
];

function doc(reports: StrategyReport[]) {
  return toBenchJson(reports, {
    kernels,
    command: 'synhold bench --quick',
    options: { concurrency: 50, intervalMs: 100, durationMs: 8000 },
    startedAt: '2026-11-22T00:00:00Z',
    elapsedMs: 60_000,
  });
}

const good = [
  rep('baseline', 'host', hist([[0.5, 5000]]), 0, 0),
  rep('none', 'host', hist([[0.7, 4000]]), 10, 80),
  rep(
    'drop',
    'host',
    hist([
      [0.6, 4000],
      [1000, 20],
    ]),
    0,
    10,
    50,
  ),
  rep('nfqueue', 'host', hist([[0.8, 4000]]), 0, 20, 40),
  rep('haproxy-seamless', 'host', hist([[0.7, 4000]]), 0, 80),
  rep('migrate-req', 'host', hist([[0.7, 4000]]), 0, 80),
  rep('baseline', 'lab', hist([[30, 3000]]), 0, 0),
  rep('none', 'lab', hist([[60, 2000]]), 50, 15),
  rep('plug', 'lab', hist([[55, 2000]]), 0, 5, 200),
  rep('plug-spawn', 'lab', hist([[250, 1500]]), 0, 20, 300),
];

test("the seed's findings reproduced: verdicts and the numbers behind them", () => {
  const run = runFromDoc('docs/bench/x/bench.json', JSON.parse(JSON.stringify(doc(good))));
  const f = findings([run]);
  assert.deepEqual(
    f.map((x) => x.verdict),
    ['reproduced', 'reproduced', 'reproduced', 'reproduced', 'compared', 'compared', 'not measured', 'not measured'],
  );
  assert.match(f[0]!.evidence.join('\n'), /10 of 4,010 requests failed \(0\.25%; reset 10\) over 80 reloads/);
  assert.match(f[0]!.evidence.join('\n'), /the kernel lab \(Linux 6\.1\.176, User-Mode Linux, 1 CPU\): 50 of 2,050/);
  assert.match(f[1]!.evidence.join('\n'), /20 ok requests \(0\.50%\) took 0\.9 s or more/);
  assert.match(f[4]!.evidence.join('\n'), /plug 200 \/ 210 \/ 210 ms, plug-spawn 300 \/ 310 \/ 310 ms \(plug's p50 hold is 100 ms shorter\)/);
  assert.match(f[5]!.evidence.join('\n'), /different kernels/);
});

test("the seed's findings contradicted or not measured, when the numbers say so", () => {
  const bad = good.map((r) => (r.name === 'none' ? rep('none', r.where as 'host', hist([[0.7, 4000]]), 0, 80) : r));
  bad.push(rep('plug', 'host', hist([[0.7, 4000]]), 3, 80, 20));
  const noDropMode = bad.map((r) => (r.name === 'drop' ? rep('drop', 'host', hist([[0.6, 4000]]), 0, 10, 50) : r)).filter((r) => r.name !== 'nfqueue');
  const f = findings([runFromDoc('b.json', JSON.parse(JSON.stringify(doc(noDropMode))))]);
  assert.equal(f[0]!.verdict, 'contradicted', 'none failed nothing');
  assert.equal(f[1]!.verdict, 'contradicted', 'drop without its 1 s mode');
  assert.equal(f[2]!.verdict, 'contradicted', 'a plug row with failures');
  assert.equal(f[3]!.verdict, 'not measured', 'no nfqueue row at all');
});

test('the short hold against the conservative one: hold, release after the swap, added p99.9 against the fd hand-over', () => {
  const withGap = (r: StrategyReport, gaps: number[]): StrategyReport => ({ ...r, hold: { ...r.hold!, swapToReleaseMs: stats(gaps) } });
  const rows = (gapMs: number, seamlessTailMs: number) => [
    rep('baseline', 'host', hist([[0.5, 5000]]), 0, 0),
    withGap(rep('nfqueue', 'host', hist([[0.8, 4000]]), 0, 20, 40), [0.2, 0.3, gapMs]),
    rep('nfqueue-exit', 'host', hist([[0.9, 4000]]), 0, 20, 45),
    rep('haproxy-seamless', 'host', hist([[seamlessTailMs, 4000]]), 0, 80),
  ];
  const good7 = findings([runFromDoc('a.json', JSON.parse(JSON.stringify(doc(rows(0.4, 0.7)))))])[6]!;
  assert.equal(good7.verdict, 'compared');
  const text = good7.evidence.join('\n');
  assert.match(
    text,
    /short hold \(`nfqueue`\): 0 of 4,000 requests failed over 20 reloads; hold p50 \/ p99 \/ max 40\.0 \/ 50\.0 \/ 50\.0 ms; release after the last old listener closed p50 \/ p99 \/ max 0\.3\d* \/ 0\.4\d* \/ 0\.4\d* ms \(3 holds saw the close\)/,
  );
  assert.match(text, /conservative hold \(`nfqueue-exit`\): 0 of 4,000 .*no hold saw the old listener close/);
  assert.match(text, /Release within 1 ms of the swap at p99 \(the goal, on the host\): met/);
  assert.match(text, /the goal \(within 5 ms\) is met/);
  // a late release and a fd hand-over whose tail is far below the hold's: both goals not met
  const bad7 = findings([runFromDoc('b.json', JSON.parse(JSON.stringify(doc(rows(4, 0.1)))))])[6]!.evidence.join('\n');
  assert.match(bad7, /at p99 \(the goal, on the host\): not met \(4\.\d+ ms\)/);
  assert.doesNotMatch(bad7, /within 5 ms\) is not met/, 'the hold adds under 1 ms of p99.9 here');
});

test('the hold around the stop (--stop-old) against the fd hand-over: its hold, the reload rates, added p99.9 within 5 ms or not', () => {
  const rows = (stopOldTailMs: number) => [
    rep('baseline', 'host', hist([[0.5, 5000]]), 0, 0),
    rep('nfqueue-stop-old', 'host', hist([[stopOldTailMs, 4000]]), 0, 15, 5),
    rep('haproxy-seamless', 'host', hist([[0.7, 4000]]), 0, 80),
  ];
  const f8 = (tail: number) => findings([runFromDoc('s.json', JSON.parse(JSON.stringify(doc(rows(tail)))))])[7]!;
  const good = f8(0.8);
  assert.equal(good.verdict, 'compared');
  const text = good.evidence.join('\n');
  assert.match(
    text,
    /hold around the stop \(`nfqueue-stop-old`\): 0 of 4,000 requests failed over 15 reloads; hold p50 \/ p99 \/ max 5\.00 \/ 15\.0 \/ 15\.0 ms; .*15 reloads at 1\.50\/s\./,
  );
  assert.match(
    text,
    /Added p99\.9 vs `haproxy-seamless` \(fd hand-over, nothing held; 80 reloads at 8\.00\/s\) in the same run: .* the goal \(within 5 ms\) is met/,
  );
  assert.match(f8(40).evidence.join('\n'), /the goal \(within 5 ms\) is not met/);
  // No --stop-old row: said, not invented.
  const none = findings([runFromDoc('t.json', JSON.parse(JSON.stringify(doc(good_rows_without_stop_old()))))])[7]!;
  assert.equal(none.verdict, 'not measured');
});

const good_rows_without_stop_old = () => [rep('baseline', 'host', hist([[0.5, 5000]]), 0, 0), rep('haproxy-seamless', 'host', hist([[0.7, 4000]]), 0, 80)];

test('real-time vs normal priority while holding: nfqueue beside nfqueue-normal in one run, gaps side by side, the 1 ms goal judged on the default', () => {
  const withGap = (r: StrategyReport, gaps: number[]): StrategyReport => ({ ...r, hold: { ...r.hold!, swapToReleaseMs: stats(gaps) } });
  const rows = [
    rep('baseline', 'host', hist([[0.5, 5000]]), 0, 0),
    withGap(rep('nfqueue', 'host', hist([[0.8, 4000]]), 0, 20, 40), [0.1, 0.2, 0.6]),
    withGap(rep('nfqueue-normal', 'host', hist([[0.8, 4000]]), 0, 20, 41), [0.1, 0.3, 2.5]),
  ];
  const f = findings([runFromDoc('p.json', JSON.parse(JSON.stringify(doc(rows))))])[6]!;
  assert.equal(f.verdict, 'compared');
  const text = f.evidence.join('\n');
  assert.match(text, /short hold \(`nfqueue`, real-time priority while holding\): 0 of 4,000 requests failed/);
  assert.match(text, /short hold at normal priority \(`nfqueue-normal`, `--priority normal`\): 0 of 4,000/);
  assert.match(
    text,
    /real-time vs normal priority while holding \(same run\): p50 0\.2\d* vs 0\.3\d* ms, p99 0\.6\d* vs 2\.5\d* ms, max 0\.6\d* vs 2\.5\d* ms/,
  );
  assert.match(text, /Release within 1 ms of the swap at p99 \(the goal, on the host\): met \(0\.6\d* ms\)/);
  // nfqueue-normal alone (no default row beside it) compares nothing
  const alone = findings([runFromDoc('q.json', JSON.parse(JSON.stringify(doc([rows[0]!, rows[2]!]))))])[6]!;
  assert.equal(alone.verdict, 'not measured');
});

test('slow requests are counted from the HDR histogram', () => {
  const r = rep(
    'drop',
    'host',
    hist([
      [1, 990],
      [1000, 9],
      [2000, 1],
    ]),
    0,
    1,
  );
  assert.deepEqual(slowCount(r, 900), { n: 10, pct: 1 });
  assert.equal(slowCount(r, 1900).n, 1);
});

test('the page: kernels, reproduce command, tables per kernel, figure next to its JSON, no holes', () => {
  const skipped: StrategyReport = { ...rep('nfqueue', 'host', newLatencyHistogram(), 0, 0), skipped: 'synhold setup --backend nfqueue failed' };
  const run = runFromDoc('docs/bench/quick/bench.json', JSON.parse(JSON.stringify(doc([...good.filter((r) => r.name !== 'nfqueue'), skipped]))));
  const md = renderBenchmarksMd([run], 'docs/BENCHMARKS.md', 'node dist/bench/src/docs.js --out docs/BENCHMARKS.md docs/bench/quick/bench.json');
  assert.match(md, /^# Benchmarks/);
  assert.match(md, /Generated from the bench's JSON by `node dist\/bench\/src\/docs.js/);
  assert.match(md, /node dist\/synhold.cjs bench --quick/);
  assert.match(md, /#### Host: Linux 6\.18\.0, 2 CPUs/);
  assert.match(md, /#### Kernel lab: Linux 6\.1\.176, User-Mode Linux, 1 CPU/);
  assert.match(md, /\(bench\/quick\/latency\.png\)/);
  assert.match(md, /\*\*nfqueue\*\* did not run: synhold setup --backend nfqueue failed/);
  assert.match(md, /### 4\. `nfqueue`.*: \*\*not measured\*\*/);
  assert.ok(!/undefined|NaN/.test(md), 'no undefined or NaN anywhere');
  // host and lab rows are in separate tables: the lab's none compares with the lab's baseline
  const rows = summarize(run.reports);
  const labNone = rows.find((r, i) => r.name === 'none' && run.reports[i]!.where === 'lab')!;
  assert.ok(labNone.addedMs!.p50 > 20, `lab none vs lab baseline: ${labNone.addedMs!.p50}`);
  assert.match(mdTable(rows.slice(0, 2)), /\| \*\*none\*\* \| 4,010 \| 80 \|/);
});

test('several runs on one page: each finding says which run a number comes from; one reproduce line per distinct command', () => {
  const a = runFromDoc('docs/bench/host/bench.json', JSON.parse(JSON.stringify(doc(good.filter((r) => r.where === 'host')))));
  const b = runFromDoc('docs/bench/host-earlier/bench.json', JSON.parse(JSON.stringify(doc(good.filter((r) => r.where === 'host')))));
  const md = renderBenchmarksMd([a, b], 'docs/BENCHMARKS.md', 'node dist/bench/src/docs.js --out docs/BENCHMARKS.md a b');
  assert.match(md, /the host \(Linux 6\.18\.0, 2 CPUs\) \[run 1\]: 10 of 4,010/);
  assert.match(md, /the host \(Linux 6\.18\.0, 2 CPUs\) \[run 2\]: 10 of 4,010/);
  assert.equal((md.match(/^node dist\/synhold.cjs bench --quick$/gm) ?? []).length, 1);
  assert.match(md, /### Run 2: `synhold bench --quick`/);
  assert.match(md, /\(bench\/host-earlier\/latency\.png\)/);
});

test('the cross-check: ab, the generator and wrk in one table; wrk rate compared with the generator; an ab-only document still renders', () => {
  const ab = { requests: 10_000, complete: 10_000, failed: 0, concurrency: 50, rps: 8000, meanMs: 6.2, p50: 6, p90: 8, p99: 12, max: 30 };
  const loadgen = { requests: 50_000, failed: 0, rps: 7600, meanMs: 6.5, p50: 6.1, p90: 8.2, p99: 12.5, max: 31 };
  const wrk = { threads: 1, connections: 50, durationS: 3, requests: 24_600, rps: 8200, socketErrors: 0, non2xx: 0, p50: 5.1, p90: 7.3, p99: 11.2 };
  const page = (crossCheck: unknown) => {
    const d = { ...JSON.parse(JSON.stringify(doc(good))), crossCheck };
    return renderBenchmarksMd([runFromDoc('docs/bench/x/bench.json', d)], 'docs/BENCHMARKS.md', 'node dist/bench/src/docs.js');
  };
  const md = page({ where: 'host', strategy: 'baseline', ab, loadgen, wrk });
  assert.match(md, /\| wrk -t 1, `Connection: close`, 3 s \(latency after the connect\) \| 24,600 \| 0 \| 8200 \| - \| 5\.1/);
  assert.match(md, /drove 8200 req\/s: the generator's rate is 93% of it/);
  const failed = page({ where: 'host', strategy: 'baseline', ab, loadgen, wrk: { ...wrk, error: 'wrk exited 1: boom' } });
  assert.match(failed, /wrk, the second C client: wrk exited 1: boom\./);
  assert.doesNotMatch(failed, /\| wrk -t/);
  const old = page({ where: 'host', strategy: 'baseline', ab, loadgen });
  assert.doesNotMatch(old, /wrk/);
  assert.ok(!/undefined|NaN/.test(md + failed + old));
});

test('the load generator against the C clients: the compare run on the page, with its command and the share of the best C client', () => {
  const rec = (client: string, round: number, rps: number) => ({
    client,
    round,
    requests: rps * 10,
    failed: 0,
    rps,
    p50: 4,
    p99: 9,
    clientCpuPct: 50,
    clientUserUs: 20,
    clientSystemUs: 30,
    serverCpuPct: 120,
    machine: { user: 60, system: 80, softirq: 20, steal: 0, idle: 10 },
    othersCpuPct: 1,
  });
  const args = parseCompareArgs(['--rounds', '2', '--seconds', '10', '--clients', 'loadgen,ab,wrk:t2']);
  assert.notEqual(args, 'help');
  const runs = [rec('loadgen', 1, 9000), rec('loadgen', 2, 9400), rec('ab', 1, 8000), rec('ab', 2, 8100), rec('wrk:t2', 1, 10000), rec('wrk:t2', 2, 9800)];
  const cmd = 'node dist/bench/src/load/compare.js --rounds 2 --seconds 10 --clients loadgen,ab,wrk:t2 --json docs/bench/load-compare.json';
  const run = runFromDoc('docs/bench/host/bench.json', JSON.parse(JSON.stringify(doc(good.filter((r) => r.where === 'host')))));
  const md = renderBenchmarksMd([run], 'docs/BENCHMARKS.md', 'node dist/bench/src/docs.js ...', {
    command: cmd,
    doc: JSON.parse(JSON.stringify({ args: { ...(args as object), inside: undefined }, runs })) as LoadCompare['doc'],
  });
  assert.match(md, /## The load generator against the C clients/);
  assert.ok(md.includes(`Command: \`${cmd}\``));
  // medians: loadgen 9200, best C client wrk:t2 at 9900
  assert.match(md, /- loadgen: 92\.9% of the best C client \(wrk:t2, 9900 req\/s\)/);
  assert.ok(!renderBenchmarksMd([run], 'docs/BENCHMARKS.md', 'x').includes('against the C clients'), 'no section without a compare run');
  // Two compare runs of the same command: one section, a table per run, each under its own command.
  const runs2 = [rec('loadgen', 1, 8900), rec('loadgen', 2, 8900), rec('ab', 1, 8000), rec('ab', 2, 8100), rec('wrk:t2', 1, 10000), rec('wrk:t2', 2, 10000)];
  const cmd2 = cmd.replace('load-compare.json', 'load-compare-2.json');
  const two = renderBenchmarksMd([run], 'docs/BENCHMARKS.md', 'x', [
    { command: cmd, doc: JSON.parse(JSON.stringify({ args: { ...(args as object), inside: undefined }, runs })) as LoadCompare['doc'] },
    { command: cmd2, doc: JSON.parse(JSON.stringify({ args: { ...(args as object), inside: undefined }, runs: runs2 })) as LoadCompare['doc'] },
  ]);
  assert.equal(two.split('## The load generator against the C clients').length - 1, 1);
  assert.match(two, /in 2 runs of the same command/);
  // Runs of different commands are not called the same command.
  const other = renderBenchmarksMd([run], 'docs/BENCHMARKS.md', 'x', [
    { command: cmd, doc: JSON.parse(JSON.stringify({ args: { ...(args as object), inside: undefined }, runs })) as LoadCompare['doc'] },
    {
      command: cmd2.replace('--clients loadgen', '--clients loadgen:t3'),
      doc: JSON.parse(JSON.stringify({ args: { ...(args as object), inside: undefined }, runs: runs2 })) as LoadCompare['doc'],
    },
  ]);
  assert.match(other, /in 2 runs, each its own table with its command/);
  assert.match(
    two,
    /### Run 1\n\nCommand: `[^`]*load-compare\.json`[\s\S]*- loadgen: 92\.9% of the best C client[\s\S]*### Run 2\n\nCommand: `[^`]*load-compare-2\.json`[\s\S]*- loadgen: 89\.0% of the best C client \(wrk:t2, 10000 req\/s\)/,
  );
});

test('the slow requests and the kernel counters of each strategy survive bench.json and are written per run', () => {
  const slowed: StrategyReport = {
    ...rep('nfqueue', 'host', hist([[0.8, 4000]]), 0, 20, 40),
    slow: {
      thresholdMs: 500,
      requests: 2,
      beforeFirstReload: 0,
      reloadsWithSlow: 2,
      byPhase: { 'after the release': 1, 'before the hold': 1 },
      slowest: [
        { latencyMs: 1019.4, sinceReloadMs: 130, phase: 'after the release', phaseMs: 12 },
        { latencyMs: 640, sinceReloadMs: 3, phase: 'before the hold', phaseMs: 20 },
      ],
    },
    counters: { TcpExtTCPSynRetrans: 2, TcpExtListenDrops: 1 },
  };
  const quiet: StrategyReport = { ...rep('baseline', 'host', hist([[0.5, 5000]]), 0, 0), counters: {} };
  const run = runFromDoc('docs/bench/x/bench.json', JSON.parse(JSON.stringify(doc([quiet, slowed]))));
  assert.deepEqual(run.reports[1]!.slow, slowed.slow);
  assert.deepEqual(run.reports[1]!.counters, slowed.counters);
  const md = renderBenchmarksMd([run], 'docs/BENCHMARKS.md', 'node dist/bench/src/docs.js docs/bench/x/bench.json');
  assert.match(
    md,
    /- slow nfqueue \(host\): 2 ok requests took >= 500 ms, in 2 reloads; started after the release: 1, before the hold: 1; the slowest: 1019 ms, started 130 ms into its reload, 12 ms after its hold's release; 640 ms, started 3 ms into its reload, 20 ms before its hold\./,
  );
  assert.match(md, /- kernel counters nfqueue \(host\) during the load: TcpExtTCPSynRetrans \+2, TcpExtListenDrops \+1\./);
  assert.match(md, /- kernel counters baseline \(host\) during the load: none of the watched counters moved\./);
  // A document from before these fields: no such sections.
  const old = renderBenchmarksMd([runFromDoc('docs/bench/x/bench.json', JSON.parse(JSON.stringify(doc(good))))], 'docs/BENCHMARKS.md', 'x');
  assert.doesNotMatch(old, /Slow ok requests|Kernel counters of each/);
});
