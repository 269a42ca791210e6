/** bench/src/cost/steady-state.ts's table (medians, per-round ratios) and wrk's keep-alive command line. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { conditionsFor, renderSteady, roundOrder, verdict, type SteadyRun } from '../../bench/src/cost/steady-state.js';
import { medianInterval } from '../../bench/src/median.js';
import { wrkArgv } from '../../bench/src/load/wrk.js';

test('steady-state table: medians per condition, the median of the per-round ratios, its interval and the verdict', () => {
  const s = (n: number, k: number, b: number) => ({ newConnRps: n, keepAliveRps: k, bulkBytesPerS: b });
  const run: SteadyRun = {
    kernel: '6.1.176',
    backend: 'plug',
    rounds: 3,
    seconds: 5,
    samples: {
      bare: [s(1000, 5000, 2e9), s(1100, 5200, 2.2e9), s(900, 4800, 1.8e9)],
      'set up': [s(990, 4900, 1.9e9), s(1089, 5200, 2.2e9), s(900, 4704, 1.71e9)],
    },
  };
  const md = renderSteady(run, 'node dist/bench/src/cost/steady-state.js --rounds 3');
  assert.match(md, /^## Linux 6\.1\.176, plug, 3 rounds of 5 s per load$/m);
  // ratios 0.99, 0.99, 1.0 -> median 99.0%; bare median 1000, set-up median 990; 3 rounds give no 95% interval
  assert.match(
    md,
    /\| new connections \(req\/s, `Connection: close`\) \| set up \| 1000 \| 990 \| 99\.0% \| too few rounds \| 99\.0% - 100\.0% \| open \(too few rounds\) \|/,
  );
  // ratios 0.98, 1.0, 0.98 -> 98.0%
  assert.match(md, /\| keep-alive requests \(req\/s\) \| set up \| 5000 \| 4900 \| 98\.0% \|/);
  // ratios 0.95, 1.0, 0.95 -> 95.0%; MB/s
  assert.match(md, /\| bulk, one TCP stream \(MB\/s\) \| set up \| 2000 \| 1900 \| 95\.0% \|/);
});

test('steady-state with --topologies: a row per egress topology, each against the same bare rounds', () => {
  const s = (n: number) => ({ newConnRps: n, keepAliveRps: n, bulkBytesPerS: n * 1e6 });
  const run: SteadyRun = {
    kernel: '6.1.176',
    backend: 'plug',
    rounds: 2,
    seconds: 2,
    samples: { bare: [s(100), s(200)], 'set up (prio)': [s(90), s(190)], 'set up (clsact)': [s(100), s(198)] },
  };
  const md = renderSteady(run, 'x');
  // prio ratios 0.9, 0.95 -> median 92.5%; clsact 1.0, 0.99 -> 99.5%
  assert.match(md, /\| new connections \(req\/s, `Connection: close`\) \| set up \(prio\) \| 150 \| 140 \| 92\.5% \| too few rounds \| 90\.0% - 95\.0% \|/);
  assert.match(md, /\| new connections \(req\/s, `Connection: close`\) \| set up \(clsact\) \| 150 \| 149 \| 99\.5% \| too few rounds \| 99\.0% - 100\.0% \|/);
});

test('the median interval: order statistics at the binomial ranks; the verdict from where it lies against 99%', () => {
  assert.equal(medianInterval([1, 2, 3, 4, 5]), undefined, 'n = 5 cannot bound the median at 95%');
  // n = 6: P(B <= 0) = 1/64 <= 0.025 < P(B <= 1) = 7/64: the extremes
  assert.deepEqual(medianInterval([6, 1, 5, 2, 4, 3]), { low: 1, high: 6 });
  // n = 100: P(B <= 39) = 0.0176 <= 0.025 < P(B <= 40) = 0.0284: the 40th and the 61st values
  const xs = Array.from({ length: 100 }, (_, i) => 100 - i);
  assert.deepEqual(medianInterval(xs), { low: 40, high: 61 });
  assert.equal(verdict({ low: 0.992, high: 1.01 }), 'met');
  assert.equal(verdict({ low: 0.95, high: 0.985 }), '**not met**');
  assert.equal(verdict({ low: 0.985, high: 1.0 }), 'open (the interval spans the goal)');
  assert.equal(verdict(undefined), 'open (too few rounds)');
});

test('steady-state conditions: bare and setup defaults, or bare and one set-up per plug topology and nfqueue steering; the order rotates', () => {
  assert.deepEqual(
    conditionsFor([]).map((c) => c.name),
    ['bare', 'set up'],
  );
  const c = conditionsFor(['prio', 'clsact']);
  assert.deepEqual(
    c.map((x) => x.name),
    ['bare', 'set up (prio)', 'set up (clsact)'],
  );
  assert.deepEqual(c[2]!.setupArgs!.slice(-4), ['--backend', 'plug', '--egress-topology', 'clsact']);
  assert.equal(c[0]!.setupArgs, undefined);
  // --other-port: the same setup for a port no load uses, after the others
  const o = conditionsFor([], true);
  assert.deepEqual(
    o.map((x) => x.name),
    ['bare', 'set up', 'set up (another port)'],
  );
  assert.deepEqual(o[2]!.setupArgs, ['setup', '--port', '8009', '--migrate-req', 'off']);
  assert.deepEqual(o[1]!.setupArgs, ['setup', '--port', '8001', '--migrate-req', 'off']);
  assert.equal(conditionsFor(['prio'], true).at(-1)!.name, 'set up (another port)');
  // --steerings: one nfqueue set-up per steering
  const st = conditionsFor([], false, ['always', 'while-holding']);
  assert.deepEqual(
    st.map((x) => x.name),
    ['bare', 'set up (nfqueue, always)', 'set up (nfqueue, while-holding)'],
  );
  assert.deepEqual(st[2]!.setupArgs!.slice(-4), ['--backend', 'nfqueue', '--steering', 'while-holding']);
  // --stand-ins: the plug topologies built by tc (no synhold setup: bare to synhold), beside bare
  const si = conditionsFor([], false, [], ['clsact']);
  assert.deepEqual(
    si.map((x) => x.name),
    ['bare', "plug's clsact topology, pfifo for the plug"],
  );
  assert.equal(si[1]!.setupArgs, undefined);
  assert.ok(si[1]!.standIn!.install.some((a) => a.join(' ').startsWith('tc qdisc add dev lo clsact')));
  // clsact-idle: the same hook, IFB and queue, no filter
  const idle = conditionsFor([], false, [], ['clsact', 'clsact-idle'])[2]!;
  assert.equal(idle.name, "plug's clsact topology without its filters, pfifo for the plug");
  assert.deepEqual(
    idle.standIn!.install.map((a) => a.slice(0, 3).join(' ')),
    ['ip link add', 'ip link set', 'tc qdisc add', 'tc qdisc add'],
  );
  assert.deepEqual(
    [0, 1, 2, 3].map((r) => roundOrder(['a', 'b', 'c'], r).join('')),
    ['abc', 'bca', 'cab', 'abc'],
  );
});

test('wrk keep-alive: no Connection: close header; the default sends it', () => {
  assert.ok(!wrkArgv('127.0.0.1', 80, { threads: 1, connections: 5, durationS: 1, keepAlive: true }).includes('Connection: close'));
  assert.ok(wrkArgv('127.0.0.1', 80, { threads: 1, connections: 5, durationS: 1 }).includes('Connection: close'));
});
