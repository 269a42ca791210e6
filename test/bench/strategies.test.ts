// The strategies' own logic, without servers: the seed's exact commands, how
// holds are read from synhold protect's --report lines, where each strategy
// runs, and how a worker's result becomes a report row.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { STRATEGY_NAMES, strategyFor } from '../../bench/src/strategies/index.js';
import { seedSetupCommands, PLUG_BUFFER, PLUG_RELEASE, NL_QDISC_ADD } from '../../bench/src/strategies/plug-spawn.js';
import { parseProtectReports, holdSummary, reasonKind, withoutSf } from '../../bench/src/strategies/synhold-hold.js';
import { placeStrategies, reportFromResult, workerLoadPlan } from '../../bench/src/bench.js';
import { parseBenchArgs, type BenchOptions } from '../../bench/src/options.js';
import { newLatencyHistogram, recordMs, encodeHistogram, summarizeMs } from '../../bench/src/histogram.js';
import type { FeatureProbe } from '../../bench/src/netns.js';
import type { WorkerResult } from '../../bench/src/protocol.js';

describe("plug-spawn: the seed's tooling, command for command", () => {
  test('topology: prio bands 4, pfifo bands, a plug on 1:4 released right after creation, u32 SYN filter to 1:4', () => {
    const cmds = seedSetupCommands(16000).map((a) => a.join(' '));
    assert.equal(cmds[0], 'tc qdisc add dev lo root handle 1: prio bands 4');
    assert.deepEqual(
      cmds.slice(1, 4),
      [1, 2, 3].map((b) => `tc qdisc add dev lo parent 1:${b} handle ${b}0: pfifo limit 1000`),
    );
    assert.equal(cmds[4], `${NL_QDISC_ADD} --dev=lo --parent=1:4 --id=40: plug --limit=33554432`);
    // A new plug starts plugged (KERNEL.md): release before anything else.
    assert.equal(cmds[5], `${NL_QDISC_ADD} --dev=lo --parent=1:4 --id=40: --update plug --release-indefinite`);
    // KERNEL.md's u32 "SYN and not ACK to dport P" (IHL pinned to 5)
    assert.ok(
      cmds[6]!.includes('u32 match ip protocol 6 0xff match u8 0x05 0x0f at 0 match ip dport 16000 0xffff match u8 0x02 0x12 at 33 flowid 1:4'),
      cmds[6],
    );
    assert.ok(cmds[6]!.startsWith('tc filter add dev lo parent 1:0 protocol ip'));
  });

  test("around each reload: --buffer before, --release-indefinite after (the seed's script)", () => {
    assert.equal(PLUG_BUFFER.join(' '), `${NL_QDISC_ADD} --dev=lo --parent=1:4 --id=40: --update plug --buffer`);
    assert.equal(PLUG_RELEASE.join(' '), `${NL_QDISC_ADD} --dev=lo --parent=1:4 --id=40: --update plug --release-indefinite`);
  });
});

describe('synhold strategies: holds from protect --report lines', () => {
  const line = (o: Record<string, unknown>) => JSON.stringify({ exitCode: 0, command: { exitCode: 0, signal: null }, timedOut: false, ...o });
  const jsonl = [
    line({
      holdMs: 12.3,
      released: 4,
      drops: 0,
      releaseReason: 'port 16000: 127.0.0.1:16000 sk:3134 replaced 1 old listener',
      timeline: { newListenerMs: 8, oldGoneMs: 11.5, releaseSentMs: 12.1 },
    }),
    line({ holdMs: 60.5, released: 0, drops: 2, releaseReason: 'command exited', timeline: { releaseSentMs: 60.2 } }),
    'not json: a line some other writer left',
    line({
      holdMs: 8,
      released: 1,
      drops: 0,
      releaseReason: 'port 16000: 127.0.0.1:16000 sk:25d1 replaced 1 old listener',
      timeline: { newListenerMs: 5, oldGoneMs: 6, releaseSentMs: 7.5 },
    }),
    line({ exitCode: 125 }),
    '',
  ].join('\n');

  test('every hold line, in order; other lines ignored', () => {
    const h = parseProtectReports(jsonl);
    assert.deepEqual(
      h.map((x) => [x.ms, x.released, x.dropped, x.swapToReleaseMs]),
      [
        [12.3, 4, 0, 12.1 - 11.5],
        [60.5, 0, 2, undefined],
        [8, 1, 0, 1.5],
      ],
    );
  });

  test('summary: stats, totals, reasons counted without socket ids, the swap-to-release gap', () => {
    assert.equal(reasonKind('port 16000: 127.0.0.1:16000 sk:3134 replaced 1 old listener'), 'port 16000: 127.0.0.1:16000 replaced 1 old listener');
    assert.equal(
      reasonKind('port 16000: 127.0.0.1:16000 sk:3134 replaced 1 old listener after SIGUSR1 to pid 26469,26470'),
      'port 16000: 127.0.0.1:16000 replaced 1 old listener after SIGUSR1 to pid N',
    );
    const s = holdSummary(parseProtectReports(jsonl), 'test');
    assert.equal(s.ms.count, 3);
    assert.equal(s.ms.max, 60.5);
    assert.equal(s.released, 5);
    assert.equal(s.dropped, 2);
    assert.deepEqual(s.reasons, { 'port 16000: 127.0.0.1:16000 replaced 1 old listener': 2, 'command exited': 1 });
    assert.equal(s.swapToReleaseMs?.count, 2);
    assert.equal(s.swapToReleaseMs?.max, 1.5);
    assert.equal(s.drain, undefined, 'no --stop-old hold, no drain');
  });

  test("hold windows on the wall clock from protect's holdStartedAt: all or none", () => {
    const at = (iso: string, holdMs: number) => line({ holdStartedAt: iso, holdMs, releaseReason: 'r', timeline: { releaseSentMs: holdMs } });
    const both = holdSummary(parseProtectReports([at('2026-12-04T10:00:00.100Z', 12.5), at('2026-12-04T10:00:01.000Z', 8)].join('\n')), 'test');
    const t0 = Date.parse('2026-12-04T10:00:00.100Z');
    assert.deepEqual(both.windows, [
      { startedAt: t0, endedAt: t0 + 12.5 },
      { startedAt: t0 + 900, endedAt: t0 + 908 },
    ]);
    // One report without it (an older synhold): no windows at all, rather than windows charged to the wrong reloads.
    const one = holdSummary(parseProtectReports([at('2026-12-04T10:00:00.100Z', 12.5), line({ holdMs: 3, releaseReason: 'r' })].join('\n')), 'test');
    assert.equal(one.windows, undefined);
  });

  test('--stop-old holds: the drain before each signal, and the signals sent with connections still on their way in', () => {
    const stopOld = (drainMs: number, queuedAtSignal: number, handshakingAtSignal: number) =>
      line({ holdMs: drainMs + 3, releaseReason: 'r', timeline: { releaseSentMs: drainMs + 3 }, stopOld: { drainMs, queuedAtSignal, handshakingAtSignal } });
    const s = holdSummary(parseProtectReports([stopOld(1, 0, 0), stopOld(51, 2, 0), stopOld(52, 1, 3), stopOld(4, 0, 0)].join('\n')), 'test');
    assert.equal(s.drain?.ms.count, 4);
    assert.equal(s.drain?.ms.max, 52);
    assert.equal(s.drain?.signalledWithQueued, 2);
    assert.equal(s.drain?.signalledWithHandshakes, 1);
    assert.equal(s.drain?.leftAtSignal, 6);
  });
});

describe('strategies and where they run', () => {
  test('every name resolves to its module; only the plug strategies need sch_plug', () => {
    for (const n of STRATEGY_NAMES) {
      const s = strategyFor(n);
      assert.equal(s.name, n);
      assert.equal(s.reloads, n !== 'baseline');
      assert.equal(s.kernelNeeds.includes('sch_plug'), n.startsWith('plug'), n);
    }
    assert.equal(strategyFor('haproxy-seamless').haproxyMode, 'seamless');
    assert.equal(strategyFor('drop').defaultIntervalMs, 1000);
  });

  const noPlug: Record<'sch_plug' | 'sch_prio', FeatureProbe> = {
    sch_plug: { ok: false, detail: 'Specified qdisc kind is unknown (plug)' },
    sch_prio: { ok: false, detail: 'Specified qdisc kind is unknown (prio)' },
  };
  const all = ['none', 'plug', 'plug-spawn', 'nfqueue', 'migrate-req'] as const;

  test('kernel without sch_plug, lab available: plug strategies in the lab with a baseline and none there too', () => {
    const p = placeStrategies([...all], noPlug, { ok: true });
    assert.deepEqual(p.host, ['baseline', 'none', 'nfqueue', 'migrate-req']);
    assert.deepEqual(p.lab, ['baseline', 'none', 'plug', 'plug-spawn']);
    assert.deepEqual(p.skipped, {});
    assert.match(p.why['plug-spawn']!, /sch_plug and sch_prio/);
  });

  test('kernel without sch_plug, no lab: skipped with both reasons, never silently', () => {
    const p = placeStrategies([...all], noPlug, { ok: false, reason: 'linux.uml not installed' });
    assert.deepEqual(p.lab, []);
    assert.deepEqual(Object.keys(p.skipped).sort(), ['plug', 'plug-spawn']);
    assert.match(
      p.skipped.plug!,
      /needs sch_plug, which this kernel lacks \(Specified qdisc kind is unknown \(plug\)\), and the kernel lab is unavailable: linux.uml not installed/,
    );
  });

  test('kernel with sch_plug: everything on the host, no lab', () => {
    const ok = { sch_plug: { ok: true, detail: '' }, sch_prio: { ok: true, detail: '' } };
    const p = placeStrategies(['plug', 'none'], ok, { ok: true });
    assert.deepEqual(p.host, ['baseline', 'none', 'plug']);
    assert.deepEqual(p.lab, []);
  });

  test('only lab strategies asked: no host group at all', () => {
    const p = placeStrategies(['plug'], noPlug, { ok: true });
    assert.deepEqual(p.host, []);
    assert.deepEqual(p.lab, ['baseline', 'none', 'plug']);
  });

  test('--full: min reloads for strategies at the common interval, not for drop at its own 1 s', () => {
    const o = parseBenchArgs(['--full']) as BenchOptions;
    assert.equal(workerLoadPlan(o, 'none').minReloads, 1500);
    assert.equal(workerLoadPlan(o, 'plug').minReloads, 1500);
    assert.equal(workerLoadPlan(o, 'drop').minReloads, undefined);
    assert.equal(workerLoadPlan(o, 'baseline').minReloads, undefined);
    const o2 = parseBenchArgs(['--full', '--interval', '100ms']) as BenchOptions;
    assert.equal(workerLoadPlan(o2, 'drop').minReloads, 1500, '--interval given: drop reloads like the others');
    assert.equal(workerLoadPlan(o, 'none').requests, 1_000_000);
  });

  test('--reference-requests bounds only the rows not asked for, with no minimum of reloads', () => {
    const o = parseBenchArgs([
      '--strategies',
      'plug,plug-spawn',
      '--requests',
      '1000000',
      '--min-reloads',
      '1500',
      '--reference-requests',
      '100000',
    ]) as BenchOptions;
    for (const ref of ['baseline', 'none'] as const) {
      assert.equal(workerLoadPlan(o, ref).requests, 100_000, ref);
      assert.equal(workerLoadPlan(o, ref).minReloads, undefined, ref);
      assert.equal(workerLoadPlan(o, ref).durationMs, undefined, ref);
    }
    for (const asked of ['plug', 'plug-spawn'] as const) {
      assert.equal(workerLoadPlan(o, asked).requests, 1_000_000, asked);
      assert.equal(workerLoadPlan(o, asked).minReloads, 1500, asked);
    }
    // none asked for itself: its own bound, not the reference one
    const o2 = parseBenchArgs(['--strategies', 'none,plug', '--requests', '5000', '--reference-requests', '100']) as BenchOptions;
    assert.equal(workerLoadPlan(o2, 'none').requests, 5000);
    assert.equal(workerLoadPlan(o2, 'baseline').requests, 100);
  });
});

describe('worker results as report rows', () => {
  const h = newLatencyHistogram();
  for (let i = 0; i < 1000; i++) recordMs(h, 1 + (i % 10) / 10);
  const ok: WorkerResult = {
    strategy: 'plug',
    where: 'lab',
    kernel: '6.1.176',
    cpus: 1,
    netns: 'synhold-bench-lab-plug-abc',
    notes: ['synhold set up: backend plug (requested)'],
    elapsedMs: 9000,
    load: {
      mode: 'closed',
      target: { host: '127.0.0.1', port: 16000 },
      startedAt: 0,
      elapsedMs: 8000,
      stoppedBy: 'duration',
      requests: 1003,
      outcomes: { ok: 1000, reset: 2, refused: 0, timeout: 1, badResponse: 0 },
      failed: 3,
      details: { ECONNRESET: 2, 'timeout-connect': 1 },
      aborted: 0,
      throughput: 125,
      latencyMs: summarizeMs(h),
      failedLatencyMs: summarizeMs(newLatencyHistogram()),
      latencyHdr: encodeHistogram(h),
      failedLatencyHdr: encodeHistogram(newLatencyHistogram()),
    },
    reloads: {
      count: 7,
      failed: 1,
      ratePerSec: 0.9,
      elapsedMs: 8000,
      nominalIntervalMs: 100,
      intervalMs: { count: 6, min: 1, mean: 1, p50: 1, p99: 1, max: 1 },
      durationMs: { count: 7, min: 900, mean: 1000, p50: 1000, p99: 1100, max: 1100 },
      overruns: 7,
      stoppedBy: 'signal',
      failures: ['reload #3: exit 125 synhold protect: busy'],
    },
    hold: {
      ms: { count: 6, min: 100, mean: 150, p50: 150, p99: 200, max: 200 },
      source: 'protect',
      released: 40,
      dropped: 0,
      reasons: { 'command exited': 6 },
    },
  };

  test('a measured run: counts, failures by outcome, holds, placement, failed reloads as notes', () => {
    const r = reportFromResult(ok, 'lab 6.1.176');
    assert.equal(r.requests, 1003);
    assert.equal(r.failed, 3);
    assert.deepEqual(r.failures, { reset: 2, refused: 0, timeout: 1, badResponse: 0 });
    assert.equal(r.latency.totalCount, 1000);
    assert.equal(r.reloads, 7);
    assert.equal(r.reloadFailures, 1);
    assert.equal(r.holdMs.p50, 150);
    assert.equal(r.hold?.released, 40);
    assert.equal(r.where, 'lab');
    assert.equal(r.kernel, '6.1.176');
    assert.equal(r.label, 'plug (lab 6.1.176)');
    assert.ok(r.notes?.some((n) => n.includes('failed reload #3')));
    assert.equal(r.skipped, undefined);
  });

  test('skipped and failed runs keep their reason; an error is also marked as one', () => {
    const s = reportFromResult({ ...ok, load: undefined, skipped: '`synhold setup --backend drop` failed' } as WorkerResult, 'host');
    assert.equal(s.skipped, '`synhold setup --backend drop` failed');
    assert.equal(s.error, undefined);
    const e = reportFromResult({ ...ok, load: undefined, error: 'warm-up failed' } as WorkerResult, 'host');
    assert.equal(e.skipped, 'failed to run: warm-up failed');
    assert.equal(e.error, 'warm-up failed');
    const b = reportFromResult({ ...ok, strategy: 'baseline', reloads: undefined, hold: undefined }, 'lab');
    assert.equal(b.baseline, true);
    assert.equal(b.holdMs.count, 0);
  });
});

describe('--stop-old strategies', () => {
  test('the reload loses its -sf and the pids after it; protect gets --stop-old USR1', () => {
    assert.deepEqual(withoutSf(['haproxy', '-f', 'C', '-p', 'P', '-D', '-sf', '12', '13']), ['haproxy', '-f', 'C', '-p', 'P', '-D']);
    assert.deepEqual(withoutSf(['haproxy', '-f', 'C', '-p', 'P', '-D']), ['haproxy', '-f', 'C', '-p', 'P', '-D']);
    assert.equal(strategyFor('nfqueue-stop-old').haproxyMode, 'sf');
    assert.match(strategyFor('nfqueue-stop-old').summary, /--stop-old USR1/);
  });
});
