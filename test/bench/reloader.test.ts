// The reload loop: start-to-start scheduling, bounds, wrap hooks — first with a
// fake target (timings under control), then with real HAProxy under load.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { runReloadLoop, type Reloadable } from '../../bench/src/reloader.js';
import type { ReloadRecord } from '../../bench/src/servers.js';
import { startNginx, startHaproxy, freePort, CleanupStack } from '../../bench/src/servers.js';
import { runLoad } from '../../bench/src/loadgen.js';
import { summarizeMs } from '../../bench/src/histogram.js';

/** A target whose reload takes `ms` and records the argv it was given. */
function fakeTarget(ms: number, opts: { fail?: boolean; throws?: boolean } = {}): Reloadable & { calls: Array<string[] | undefined>; log: string[] } {
  const calls: Array<string[] | undefined> = [];
  const log: string[] = [];
  return {
    calls,
    log,
    reloadArgv: () => ['/usr/sbin/haproxy', '-f', 'cfg', '-sf', '1'],
    reload: async (o = {}) => {
      calls.push(o.argv);
      log.push('reload');
      const startMs = performance.now();
      await sleep(ms);
      if (opts.throws) throw new Error('boom');
      const r: ReloadRecord = {
        argv: o.argv ?? [],
        startedAt: Date.now(),
        startMs,
        durationMs: performance.now() - startMs,
        exitCode: opts.fail ? 1 : 0,
        signal: null,
        mode: 'sf',
        ok: !opts.fail,
        oldPids: [1],
        newPids: [2],
      };
      return r;
    },
  };
}

describe('schedule', () => {
  test('fast reloads: one every interval, start to start (no sleep after)', async () => {
    const r = await runReloadLoop({ target: fakeTarget(30), intervalMs: 100, count: 6 });
    assert.equal(r.count, 6);
    assert.equal(r.stoppedBy, 'count');
    assert.equal(r.overruns, 0);
    // a loop that slept 100 ms after each 30 ms reload would show ~130 ms
    assert.ok(r.intervalMs.mean >= 98 && r.intervalMs.mean < 125, JSON.stringify(r.intervalMs));
    assert.ok(r.durationMs.min >= 29);
  });

  test('slow reloads: the next starts at once, never two at a time', async () => {
    const r = await runReloadLoop({ target: fakeTarget(150), intervalMs: 100, count: 4 });
    assert.equal(r.count, 4);
    assert.equal(r.overruns, 4);
    assert.ok(r.intervalMs.min >= 149 && r.intervalMs.max < 220, JSON.stringify(r.intervalMs));
  });

  test('bounded by the deadline and by the abort signal', async () => {
    const r1 = await runReloadLoop({ target: fakeTarget(5), intervalMs: 50, deadlineMs: 300 });
    assert.equal(r1.stoppedBy, 'deadline');
    assert.ok(r1.count >= 5 && r1.count <= 7, `count ${r1.count}`);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 120);
    const t0 = Date.now();
    const r2 = await runReloadLoop({ target: fakeTarget(5), intervalMs: 1000, deadlineMs: 60_000, signal: ac.signal });
    assert.equal(r2.stoppedBy, 'signal');
    assert.equal(r2.count, 1);
    assert.ok(Date.now() - t0 < 600, 'abort wakes the sleep');
    const r3 = await runReloadLoop({ target: fakeTarget(5), intervalMs: 10, durationMs: 100 });
    assert.equal(r3.stoppedBy, 'duration');
  });

  test('stops after too many failures in a row, and reports them', async () => {
    const r = await runReloadLoop({ target: fakeTarget(1, { fail: true }), intervalMs: 1, count: 100, maxConsecutiveFailures: 3 });
    assert.equal(r.count, 3);
    assert.equal(r.failed, 3);
    assert.equal(r.stoppedBy, 'failures');
  });
});

describe('wrap', () => {
  test('argv rewrite: the target runs the wrapped command', async () => {
    const t = fakeTarget(1);
    await runReloadLoop({ target: t, intervalMs: 1, count: 2, wrap: (argv) => ['synhold', 'protect', '--', ...argv] });
    assert.deepEqual(t.calls[0], ['synhold', 'protect', '--', '/usr/sbin/haproxy', '-f', 'cfg', '-sf', '1']);
  });

  test('before/after run around each reload; after runs even when the reload throws', async () => {
    const t = fakeTarget(20, { throws: true });
    const r = await runReloadLoop({
      target: t,
      intervalMs: 1,
      count: 2,
      maxConsecutiveFailures: 10,
      wrap: {
        before: async () => {
          t.log.push('before');
          await sleep(10);
        },
        after: async () => {
          t.log.push('after');
        },
      },
    });
    assert.deepEqual(t.log, ['before', 'reload', 'after', 'before', 'reload', 'after']);
    assert.equal(r.failed, 2);
    assert.match(r.reloads[0]!.hookError!, /reload: boom/);
    assert.ok(r.reloads[0]!.beforeMs! >= 9);
    assert.ok(r.reloads[0]!.holdMs >= 29, `hold ${r.reloads[0]!.holdMs}`);
  });

  test('a failing before hook skips the reload but still runs after', async () => {
    const t = fakeTarget(1);
    const r = await runReloadLoop({
      target: t,
      intervalMs: 1,
      count: 1,
      wrap: {
        before: async () => {
          throw new Error('no plug');
        },
        after: async () => {
          t.log.push('after');
        },
      },
    });
    assert.deepEqual(t.log, ['after']);
    assert.equal(r.failed, 1);
    assert.match(r.reloads[0]!.hookError!, /before: no plug/);
  });
});

describe('real HAProxy under load', () => {
  test('plain -sf reloads every 100 ms at concurrency 50: reloads recorded, every request classified', async () => {
    const cl = new CleanupStack();
    try {
      const ng = await startNginx({ workers: 1 });
      cl.add(() => ng.stop());
      const hp = await startHaproxy({ backendPort: ng.port, port: await freePort() });
      cl.add(() => hp.stop());
      const ac = new AbortController();
      const loop = runReloadLoop({ target: hp, intervalMs: 100, signal: ac.signal, deadlineMs: 20_000, count: 200 });
      const load = await runLoad({ host: '127.0.0.1', port: hp.port, concurrency: 50, durationMs: 3000 }).finally(() => ac.abort());
      const rl = await loop;
      const sum = Object.values(load.outcomes).reduce((a, b) => a + b, 0);
      assert.equal(sum, load.requests);
      assert.ok(load.requests > 500, `requests ${load.requests}`);
      assert.ok(rl.count >= 10, `reloads ${rl.count}`);
      assert.equal(rl.failed, 0, JSON.stringify(rl.reloads.find((r) => !r.ok)));
      // Failures are probabilistic (the seed: 0.25%): reported, not asserted.
      const s = summarizeMs(load.latency);
      console.log(
        `# -sf x${rl.count} (${rl.ratePerSec.toFixed(1)}/s, reload p50 ${rl.durationMs.p50} ms): ${load.requests} requests, ` +
          `${load.failed} failed ${JSON.stringify(load.outcomes)}, p50 ${s.p50} ms p99 ${s.p99} ms`,
      );
    } finally {
      const errs = await cl.run();
      assert.deepEqual(errs, []);
    }
  });
});
