// Parsing Apache Bench's summary (captured from ab 2.3, Debian 12's apache2-utils).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAbOutput } from '../../bench/src/ab.js';

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
