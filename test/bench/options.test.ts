// `synhold bench` arguments: presets, bounds, and bad input refused before anything runs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseBenchArgs,
  BenchUsageError,
  DEFAULT_STRATEGIES,
  FULL_MIN_RELOADS,
  FULL_REQUESTS,
  QUICK_CAP_MS,
  QUICK_DURATION_MS,
  type BenchOptions,
} from '../../bench/src/options.js';

const parse = (args: string[], g = {}): BenchOptions => {
  const o = parseBenchArgs(args, g);
  assert.notEqual(o, 'help');
  return o as BenchOptions;
};

test('--quick: 6 s per strategy and at least 3 reloads, every strategy, the load capped at QUICK_CAP_MS while it waits for them', () => {
  const o = parse(['--quick']);
  assert.equal(o.preset, 'quick');
  assert.equal(o.durationMs, QUICK_DURATION_MS);
  assert.equal(o.requests, undefined);
  assert.equal(o.minReloads, 3);
  // A protected reload takes ~6-9 s in CI's kernel lab: 3x 6 s reached only 2 reloads there.
  assert.equal(o.capMs, QUICK_CAP_MS);
  assert.ok(o.capMs >= 3 * 20_000, 'room for 3 reloads of 20 s each');
  assert.equal(parse(['--quick', '--duration', '5s']).minReloads, undefined, "an explicit bound replaces the preset's");
  assert.equal(parse(['--quick', '--duration', '5s']).capMs, 5000, 'and its cap too');
  assert.equal(parse(['--quick', '--min-reloads', '5']).capMs, QUICK_CAP_MS);
  assert.deepEqual(o.strategies, [...DEFAULT_STRATEGIES]);
  assert.equal(o.concurrency, 50);
  assert.equal(o.intervalMs, undefined, 'no --interval: 100 ms, drop its own 1 s');
  assert.ok(o.abRequests > 0);
});

test("--full: the seed's 1,000,000 requests and 1,500 reloads, still capped in time", () => {
  const o = parse(['--full']);
  assert.equal(o.requests, FULL_REQUESTS);
  assert.equal(o.minReloads, FULL_MIN_RELOADS);
  assert.equal(o.durationMs, undefined);
  assert.ok(o.capMs > 0 && Number.isFinite(o.capMs));
});

test('--requests / --duration / --min-reloads / --interval / --concurrency', () => {
  const a = parse(['--requests', '5000', '--min-reloads', '20', '--interval', '250ms', '--concurrency', '10']);
  assert.equal(a.requests, 5000);
  assert.equal(a.minReloads, 20);
  assert.equal(a.intervalMs, 250);
  assert.equal(a.concurrency, 10);
  assert.equal(a.durationMs, undefined);
  const b = parse(['--duration', '3s']);
  assert.equal(b.durationMs, 3000);
  assert.equal(b.capMs, 3000);
  const b2 = parse(['--duration', '3s', '--min-reloads', '5']);
  assert.equal(b2.minReloads, 5);
  assert.equal(b2.capMs, 9000, 'a minimum of reloads may stretch a --duration run to 3x, no more');
  // --full with an explicit --requests keeps the explicit bound and no implicit min reloads
  const c = parse(['--full', '--requests', '1000']);
  assert.equal(c.requests, 1000);
  assert.equal(c.minReloads, undefined);
  assert.ok(c.abRequests <= 1000);
});

test('--max-load-time replaces the time bound of every preset (a seed-scale run in the slow kernel lab)', () => {
  const o = parse(['--full', '--strategies', 'plug', '--max-load-time', '180m']);
  assert.equal(o.requests, FULL_REQUESTS);
  assert.equal(o.minReloads, FULL_MIN_RELOADS);
  assert.equal(o.capMs, 3 * 3_600_000);
  assert.equal(parse(['--duration', '10s', '--min-reloads', '5', '--max-load-time', '2m']).capMs, 120_000);
  assert.equal(parse(['--quick', '--max-load-time', '10m']).capMs, 600_000);
});

test("strategies: de-duplicated, canonical order, 'all'", () => {
  assert.deepEqual(parse(['--strategies', 'plug,none,plug']).strategies, ['none', 'plug']);
  assert.deepEqual(parse(['--strategies', 'all']).strategies, [...DEFAULT_STRATEGIES]);
  assert.deepEqual(parse(['--strategies', 'migrate-req,baseline']).strategies, ['baseline', 'migrate-req']);
});

test("--json from the global option or the command's", () => {
  assert.equal(parse([]).json, false);
  assert.equal(parse(['--json']).json, true);
  assert.equal(parse([], { json: true }).json, true);
  assert.deepEqual(parse(['--quick']).argv, ['synhold', 'bench', '--quick']);
});

test('bad input: one clear message each', () => {
  const bad: Array<[string[], RegExp]> = [
    [['--strategies', 'none,bogus'], /unknown strategy "bogus" \(have: baseline, none, drop/],
    [['--strategies', ''], /empty/],
    [['--quick', '--full'], /exclude each other/],
    [['--requests', '10', '--duration', '1s'], /not both/],
    [['--min-reloads', '-1'], /integer >= 0|ambiguous|argument/],
    [['--requests', '0'], /integer >= 1/],
    [['--reference-requests', '0'], /--reference-requests "0" is not an integer >= 1/],
    [['--requests', '1e6'], /integer/],
    [['--interval', 'fast'], /not a duration/],
    [['--concurrency', '99999'], /more than/],
    [['--max-load-time', '361m'], /--max-load-time 361m is over its maximum of 360m/],
    [['--max-load-time', 'long'], /--max-load-time: "long" is not a duration/],
    [['--duration', '10m', '--max-load-time', '5m'], /shorter than --duration/],
    [['--netns', 'x'], /own network namespaces/],
    [['--bogus'], /Unknown option/],
    [['positional'], /positional|Unexpected argument/i],
  ];
  for (const [args, re] of bad) {
    assert.throws(
      () => parseBenchArgs(args),
      (e: unknown) => e instanceof BenchUsageError && re.test((e as Error).message),
      args.join(' '),
    );
  }
});

test('--help', () => {
  assert.equal(parseBenchArgs(['--help']), 'help');
});
