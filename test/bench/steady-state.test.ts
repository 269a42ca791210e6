/** bench/src/cost/steady-state.ts's table (medians, per-round ratios) and wrk's keep-alive command line. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderSteady, type SteadyRun } from '../../bench/src/cost/steady-state.js';
import { wrkArgv } from '../../bench/src/load/wrk.js';

test('steady-state table: medians per condition and the median of the per-round ratios', () => {
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
  // ratios 0.99, 0.99, 1.0 -> median 99.0%; bare median 1000, set-up median 990
  assert.match(md, /\| new connections \(req\/s, `Connection: close`\) \| 1000 \| 990 \| 99\.0% \| 99\.0% - 100\.0% \|/);
  // ratios 0.98, 1.0, 0.98 -> 98.0%
  assert.match(md, /\| keep-alive requests \(req\/s\) \| 5000 \| 4900 \| 98\.0% \|/);
  // ratios 0.95, 1.0, 0.95 -> 95.0%; MB/s
  assert.match(md, /\| bulk, one TCP stream \(MB\/s\) \| 2000 \| 1900 \| 95\.0% \|/);
});

test('wrk keep-alive: no Connection: close header; the default sends it', () => {
  assert.ok(!wrkArgv('127.0.0.1', 80, { threads: 1, connections: 5, durationS: 1, keepAlive: true }).includes('Connection: close'));
  assert.ok(wrkArgv('127.0.0.1', 80, { threads: 1, connections: 5, durationS: 1 }).includes('Connection: close'));
});
