// The C clients the load generator is held against: Apache Bench's summary
// (captured from ab 2.3, Debian 12's apache2-utils), wrk's report, their
// command lines, and the arguments of the side-by-side comparison (load/compare.ts).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { abArgv, parseAbOutput } from '../../bench/src/ab.js';
import { parseWrkOutput, wrkArgv } from '../../bench/src/load/wrk.js';
import { parseClient, parseCompareArgs } from '../../bench/src/load/compare.js';

const AB_OUTPUT = `This is ApacheBench, Version 2.3 <$Revision$>
Benchmarking 127.0.0.1 (be patient).....done

Server Software:        SimpleHTTP/0.6
Concurrency Level:      5
Time taken for tests:   0.279 seconds
Complete requests:      200
Failed requests:        0
Requests per second:    716.42 [#/sec] (mean)
Time per request:       6.979 [ms] (mean)
Time per request:       1.396 [ms] (mean, across all concurrent requests)

Connection Times (ms)
              min  mean[+/-sd] median   max
Total:          1    7   3.4      6      20

Percentage of the requests served within a certain time (ms)
  50%      6
  66%      8
  75%      9
  80%     10
  90%     12
  95%     14
  98%     15
  99%     18
 100%     20 (longest request)
`;

test('ab summary: counts, rate, per-request mean (not the across-all one), percentiles', () => {
  const r = parseAbOutput(AB_OUTPUT);
  assert.deepEqual(r, { complete: 200, failed: 0, rps: 716.42, meanMs: 6.979, p50: 6, p90: 12, p99: 18, max: 20 });
});

test('ab that aborted early: NaN, not zeros that look like a measurement', () => {
  const r = parseAbOutput('apr_socket_recv: Connection reset by peer (104)\nTotal of 120 requests completed\n');
  assert.ok(Number.isNaN(r.complete) && Number.isNaN(r.p99));
});

test('ab command line: -t before -n (ab takes -t alone as -n 50000)', () => {
  assert.deepEqual(abArgv('127.0.0.1', 16000, 1000, 50), ['ab', '-q', '-n', '1000', '-c', '50', '-r', '-s', '5', 'http://127.0.0.1:16000/']);
  assert.deepEqual(abArgv('::1', 80, 500_000, 50, { timeLimitS: 10 }).slice(0, 6), ['ab', '-q', '-t', '10', '-n', '500000']);
  assert.equal(abArgv('::1', 80, 1, 1).at(-1), 'http://[::1]:80/');
});

// wrk 4.1.0 (Debian 12's wrk), `--latency`, against HAProxy with `Connection: close`.
const WRK_OUTPUT = `Running 10s test @ http://127.0.0.1:16000/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms    1.03ms  32.10ms   93.51%
    Req/Sec    17.61k     1.02k   19.20k    74.00%
  Latency Distribution
     50%    1.30ms
     75%    1.66ms
     90%    2.21ms
     99%    5.29ms
  175215 requests in 10.00s, 27.40MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:  17518.44
Transfer/sec:      2.74MB
`;

test('wrk report: rate, count, errors, percentiles in ms', () => {
  assert.deepEqual(parseWrkOutput(WRK_OUTPUT), { requests: 175215, rps: 17518.44, socketErrors: 4, non2xx: 2, p50: 1.3, p90: 2.21, p99: 5.29 });
  const us = parseWrkOutput(WRK_OUTPUT.replace('1.30ms', '812.00us').replace('5.29ms', '1.20s'));
  assert.equal(us.p50, 0.812);
  assert.equal(us.p99, 1200);
  const failed = parseWrkOutput('unable to connect to 127.0.0.1:16000 Connection refused\n');
  assert.ok(Number.isNaN(failed.rps) && Number.isNaN(failed.requests));
  assert.deepEqual(wrkArgv('127.0.0.1', 16000, { threads: 2, connections: 50, durationS: 10 }), [
    'wrk',
    '-t',
    '2',
    '-c',
    '50',
    '-d',
    '10s',
    '--timeout',
    '5s',
    '--latency',
    '-H',
    'Connection: close',
    'http://127.0.0.1:16000/',
  ]);
});

test('compare: client list and arguments', () => {
  assert.deepEqual(parseClient('loadgen:t2:socket'), { kind: 'loadgen', label: 'loadgen:t2:socket', engine: 'js', threads: 2, transport: 'socket' });
  // loadgen: runLoad's default engine; tN and js: the JS engine; native: the C one
  assert.deepEqual(parseClient('loadgen'), { kind: 'loadgen', label: 'loadgen' });
  assert.deepEqual(parseClient('loadgen:t2'), { kind: 'loadgen', label: 'loadgen:t2', engine: 'js', threads: 2 });
  assert.deepEqual(parseClient('loadgen:js'), { kind: 'loadgen', label: 'loadgen:js', engine: 'js' });
  assert.deepEqual(parseClient('loadgen:native'), { kind: 'loadgen', label: 'loadgen:native', engine: 'native' });
  assert.deepEqual(parseClient('loadgen:native:t1'), { kind: 'loadgen', label: 'loadgen:native:t1', engine: 'native', threads: 1 });
  assert.throws(() => parseClient('loadgen:native:socket'), /native engine has no JS transport/);
  assert.throws(() => parseClient('loadgen:native:t0'), /1 thread or more/);
  assert.deepEqual(parseClient('wrk'), { kind: 'wrk', label: 'wrk', threads: 1 });
  assert.deepEqual(parseClient('module:/tmp/old/loadgen.js'), { kind: 'module', label: 'module:/tmp/old/loadgen.js', path: '/tmp/old/loadgen.js' });
  assert.throws(() => parseClient('ab:t2'), /no options/);
  assert.throws(() => parseClient('curl'), /unknown client/);
  const a = parseCompareArgs(['--rounds', '3', '--seconds', '5', '--clients', 'loadgen:t1,ab']);
  assert.ok(a !== 'help');
  assert.equal(a.rounds, 3);
  assert.deepEqual(
    a.clients.map((c) => c.label),
    ['loadgen:t1', 'ab'],
  );
  assert.throws(() => parseCompareArgs(['--rounds', '0']), /--rounds/);
  assert.throws(() => parseCompareArgs(['--bogus']), /unknown argument/);
});
