// The load generator's native engine (bench/native/loadgen-engine.c, driven by
// bench/src/load/native.ts) against real nginx and against servers that fail in
// each way it must classify; the verdicts are held against the JS engine's
// (response.ts), and the choice of engine runLoad makes. Everything on
// loopback (127.0.0.1, 127.0.0.2, ::1), ports chosen free; every run bounded
// in requests or time. The failure outcomes are also run on this engine by
// loadgen.test.ts's "failure outcomes (native engine, 2 threads)".

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { runLoad, defaultNativeThreads, NATIVE_ENGINE_PATH, nativeEngineProblem } from '../../bench/src/loadgen.js';
import { expectation, responseProblem } from '../../bench/src/load/response.js';
import { startNginx, freePort, type NginxServer } from '../../bench/src/servers.js';
import { summarizeMs } from '../../bench/src/histogram.js';
import { tcpServer, rawHttpServer, pongOnIpv6 } from './helpers.js';

test('the build made the native engine (npm run build: package.json build:engine)', () => {
  assert.ok(existsSync(NATIVE_ENGINE_PATH), `${NATIVE_ENGINE_PATH} is missing`);
  assert.equal(nativeEngineProblem(), undefined);
});

describe('native engine against real nginx', () => {
  let ng: NginxServer;
  before(async () => {
    ng = await startNginx({ workers: 1 });
  });
  after(async () => {
    await ng?.stop();
  });

  test('ok responses; the request bound is exact across threads; one clock for all records', async () => {
    const t0 = Date.now();
    const r = await runLoad({ host: '127.0.0.1', port: ng.port, concurrency: 7, requests: 3001, engine: 'native', threads: 3, timeline: true });
    assert.deepEqual(r.generator, { engine: 'native', threads: 3 });
    assert.equal(r.requests, 3001);
    assert.equal(r.outcomes.ok, 3001, JSON.stringify(r.details));
    assert.deepEqual(r.details, {});
    assert.equal(r.stoppedBy, 'requests');
    assert.equal(r.latency.totalCount, 3001);
    assert.equal(r.aborted, 0);
    assert.equal(r.timeline!.length, 3001);
    assert.ok(
      r.timeline!.every((t) => t.startMs >= 0 && t.latencyMs > 0 && t.startMs + t.latencyMs <= r.elapsedMs + 1),
      JSON.stringify(r.timeline!.find((t) => t.startMs < 0 || t.latencyMs <= 0 || t.startMs + t.latencyMs > r.elapsedMs + 1)),
    );
    assert.ok(r.startedAt >= t0 - 1 && r.startedAt + r.elapsedMs <= Date.now() + 1);
    const s = summarizeMs(r.latency);
    assert.ok(s.min > 0 && s.max < 5000, JSON.stringify(s));
    // nginx's own count of the requests it answered would be the independent
    // oracle; the exact bound is checked above against the records instead
  });

  test('the default engine of a large closed loop is the native one', async () => {
    const r = await runLoad({ host: '127.0.0.1', port: ng.port, concurrency: 10, requests: 1000 });
    assert.deepEqual(r.generator, { engine: 'native', threads: defaultNativeThreads() });
    assert.equal(r.outcomes.ok, 1000, JSON.stringify(r.details));
  });

  test('the duration bound stops it', async () => {
    const t0 = Date.now();
    const r = await runLoad({ host: '127.0.0.1', port: ng.port, concurrency: 10, durationMs: 500, engine: 'native' });
    assert.equal(r.stoppedBy, 'duration');
    assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
    assert.ok(r.elapsedMs >= 500 && r.elapsedMs < 1500, `elapsed ${r.elapsedMs}`);
    assert.ok(r.requests > 10);
    assert.equal(r.failed, 0, JSON.stringify(r.details));
    // nothing started after the bound: every start lies before it (give or
    // take the moment between the check and the request's own clock reading,
    // as in engine.ts)
    const tl = await runLoad({ host: '127.0.0.1', port: ng.port, concurrency: 4, durationMs: 300, engine: 'native', timeline: true });
    const late = tl.timeline!.filter((t) => t.startMs >= 300);
    assert.ok(
      late.every((t) => t.startMs < 320),
      JSON.stringify(late),
    );
  });

  test('HTTP/1.1 with Connection: close, and expectBody null', async () => {
    const r = await runLoad({ host: '127.0.0.1', port: ng.port, concurrency: 4, requests: 50, httpVersion: '1.1', engine: 'native' });
    assert.equal(r.outcomes.ok, 50, JSON.stringify(r.details));
    const any = await runLoad({ host: '127.0.0.1', port: ng.port, concurrency: 4, requests: 50, expectBody: null, engine: 'native' });
    assert.equal(any.outcomes.ok, 50, JSON.stringify(any.details));
    const wrong = await runLoad({ host: '127.0.0.1', port: ng.port, concurrency: 4, requests: 50, expectBody: 'ping', engine: 'native' });
    assert.equal(wrong.details['wrong-body'], 50, JSON.stringify(wrong.details));
  });

  test('localAddress: connects from the chosen source address', async () => {
    const srv = await rawHttpServer('HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong');
    try {
      const r = await runLoad({ host: '127.0.0.1', port: srv.port, localAddress: '127.0.0.2', concurrency: 2, requests: 4, engine: 'native' });
      assert.equal(r.outcomes.ok, 4, JSON.stringify(r.details));
      assert.ok(srv.peers.length === 4 && srv.peers.every((p) => p === '127.0.0.2'), srv.peers.join(','));
    } finally {
      await srv.close();
    }
  });
});

describe('native engine: failures', () => {
  test('a refused port: ECONNREFUSED', async () => {
    const port = await freePort();
    const r = await runLoad({ host: '127.0.0.1', port, concurrency: 5, requests: 40, engine: 'native' });
    assert.equal(r.outcomes.refused, 40, JSON.stringify(r.outcomes));
    assert.deepEqual(r.details, { ECONNREFUSED: 40 });
    assert.equal(r.failedLatency.totalCount, 40);
  });

  test('a server that resets mid-response: ECONNRESET, not a bad response', async () => {
    const srv = await tcpServer((s) => {
      s.once('data', () => s.write('HTTP/1.0 200 OK\r\nContent-Length: 4000\r\n\r\npo', () => s.resetAndDestroy()));
    });
    try {
      const r = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 3, requests: 12, engine: 'native' });
      assert.equal(r.outcomes.reset, 12, JSON.stringify(r.outcomes));
      assert.deepEqual(r.details, { ECONNRESET: 12 });
    } finally {
      await srv.close();
    }
  });

  test('a RST right after the whole, correct response: ok, noted reset-after-response (or EOF first: plain ok)', async () => {
    const srv = await tcpServer((s) => {
      s.once('data', () => s.write('HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong', () => s.resetAndDestroy()));
    });
    try {
      const r = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 3, requests: 12, engine: 'native' });
      assert.equal(r.outcomes.ok, 12, JSON.stringify({ o: r.outcomes, d: r.details }));
      assert.equal(r.details['reset-after-response'], 12, JSON.stringify(r.details));
    } finally {
      await srv.close();
    }
  });

  test('a server that never answers: timeout-response, after the timeout', async () => {
    const srv = await tcpServer(() => undefined);
    try {
      const t0 = Date.now();
      const r = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 4, requests: 4, requestTimeoutMs: 300, engine: 'native', threads: 2 });
      assert.equal(r.outcomes.timeout, 4);
      assert.deepEqual(r.details, { 'timeout-response': 4 });
      assert.ok(Date.now() - t0 < 2000);
      const f = summarizeMs(r.failedLatency);
      assert.ok(f.min >= 299 && f.max < 400, JSON.stringify(f));
    } finally {
      await srv.close();
    }
  });

  // Every odd response loadgen.test.ts holds the quick check against: the
  // verdict through the native engine (its C quick check, else the raw bytes
  // judged by responseProblem) is responseProblem's own.
  test('every response gets the verdict responseProblem gives it', async () => {
    const responses = [
      'HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong',
      'HTTP/1.0 200 OK\r\nCONTENT-LENGTH:4\r\n\r\npong',
      'HTTP/1.0 200 OK\r\nContent-Length: \t4\r\n\r\npong',
      'HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npongextra',
      'HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npon',
      'HTTP/1.0 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\npong!',
      'HTTP/1.0 200 OK\r\nContent-Length: 4x\r\n\r\npong',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npong\r\n0\r\n\r\n',
      'HTTP/1.0 200 OK\r\n\r\npong',
      'HTTP/1.0 200 OK\nContent-Length: 4\n\npong',
      'HTTP/1.2 200 OK\r\nContent-Length: 4\r\n\r\npong',
      'HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n',
      'HTTP/1.0 200 OK\r\nContent-Length: 40\r\n\r\npong',
      'HTTP/1.1 200',
      '',
      'garbage\r\n\r\n',
    ];
    for (const resp of responses) {
      const b = Buffer.from(resp, 'latin1');
      for (const body of ['pong', null]) {
        const want = responseProblem(b, b.length, expectation(body));
        const srv = await rawHttpServer(resp);
        try {
          const r = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 2, requests: 2, expectBody: body, engine: 'native' });
          const label = `${JSON.stringify(resp)} expecting ${JSON.stringify(body)}`;
          if (want === null) {
            assert.equal(r.outcomes.ok, 2, `${label}: ${JSON.stringify(r.details)}`);
            assert.deepEqual(r.details, {}, label);
          } else {
            assert.equal(r.outcomes.badResponse, 2, `${label}: ${JSON.stringify(r.outcomes)}`);
            assert.deepEqual(r.details, { [want]: 2 }, label);
          }
        } finally {
          await srv.close();
        }
      }
    }
  });

  test('a response over MAX_RESPONSE_BYTES: too-large', async () => {
    const srv = await rawHttpServer(`HTTP/1.0 200 OK\r\nContent-Length: 70000\r\n\r\n${'x'.repeat(70_000)}`);
    try {
      const r = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 2, requests: 4, engine: 'native' });
      assert.deepEqual(r.details, { 'too-large': 4 });
      // and a large one under the limit is read whole and judged (by the parent: not "pong")
      const big = await rawHttpServer(`HTTP/1.0 200 OK\r\nContent-Length: 60000\r\n\r\n${'x'.repeat(60_000)}`);
      try {
        const r2 = await runLoad({ host: '127.0.0.1', port: big.port, concurrency: 2, requests: 4, engine: 'native', expectBody: 'x'.repeat(60_000) });
        assert.equal(r2.outcomes.ok, 4, JSON.stringify(r2.details));
      } finally {
        await big.close();
      }
    } finally {
      await srv.close();
    }
  });
});

describe('native engine: stopping', () => {
  test('the hard deadline closes what is in flight and counts it, across threads', async () => {
    const srv = await tcpServer(() => undefined);
    try {
      const t0 = Date.now();
      const r = await runLoad({
        host: '127.0.0.1',
        port: srv.port,
        concurrency: 5,
        durationMs: 100,
        deadlineMs: 400,
        requestTimeoutMs: 10_000,
        engine: 'native',
        threads: 2,
      });
      const el = Date.now() - t0;
      assert.ok(el >= 350 && el < 1500, `elapsed ${el}`);
      assert.equal(r.stoppedBy, 'deadline');
      assert.equal(r.aborted, 5);
      assert.equal(r.requests, 0);
    } finally {
      await srv.close();
    }
  });

  test('the abort signal stops starting requests; the ones in flight finish', async () => {
    const srv = await rawHttpServer('HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong');
    try {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 200);
      const r = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 4, durationMs: 10_000, signal: ac.signal, engine: 'native' });
      assert.equal(r.stoppedBy, 'signal');
      assert.ok(r.elapsedMs < 2000, `elapsed ${r.elapsedMs}`);
      assert.ok(r.requests > 0);
      assert.equal(r.failed, 0, JSON.stringify(r.details));
      assert.equal(r.aborted, 0);
    } finally {
      await srv.close();
    }
  });

  test('progress reports requests and in-flight ones while it runs', async () => {
    const srv = await rawHttpServer('HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong');
    try {
      const seen: number[] = [];
      const r = await runLoad({
        host: '127.0.0.1',
        port: srv.port,
        concurrency: 4,
        durationMs: 600,
        engine: 'native',
        progressIntervalMs: 100,
        onProgress: (p) => seen.push(p.requests),
      });
      assert.ok(seen.length >= 4, `progress calls: ${seen.length}`);
      assert.ok(
        seen.some((n) => n > 0 && n < r.requests),
        `progress ${seen.join(',')} of ${r.requests}`,
      );
      assert.equal(seen.at(-1), r.requests);
    } finally {
      await srv.close();
    }
  });
});

describe('native engine: IPv6', () => {
  test('::1 target, and ::1 as the source address (skipped when lo has no ::1)', async (t) => {
    const srv = await pongOnIpv6(t);
    if (!srv) return;
    try {
      const r = await runLoad({ host: '::1', port: srv.port, concurrency: 3, requests: 30, engine: 'native', threads: 2 });
      assert.equal(r.outcomes.ok, 30, JSON.stringify(r.details));
      assert.equal(r.target.host, '::1');
      const l = await runLoad({ host: '::1', port: srv.port, localAddress: '::1', concurrency: 1, requests: 3, engine: 'native' });
      assert.equal(l.outcomes.ok, 3, JSON.stringify(l.details));
      assert.ok(srv.peers.every((p) => p === '::1'));
      const refused = await runLoad({ host: '::1', port: await freePort(), concurrency: 2, requests: 4, engine: 'native' });
      assert.deepEqual(refused.details, { ECONNREFUSED: 4 });
    } finally {
      await srv.close();
    }
  });
});

describe('which engine runs', () => {
  test('the open loop runs on the JS engine; asking it of the native one is an error', async () => {
    const srv = await rawHttpServer('HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong');
    try {
      const r = await runLoad({ host: '127.0.0.1', port: srv.port, mode: 'open', rate: 100, durationMs: 200 });
      assert.equal(r.generator?.engine, 'js');
      assert.equal(r.generator?.fallback, undefined);
      assert.ok(r.outcomes.ok > 0);
      await assert.rejects(
        runLoad({ host: '127.0.0.1', port: srv.port, mode: 'open', rate: 100, durationMs: 200, engine: 'native' }),
        /open loop runs on the JS engine only/,
      );
    } finally {
      await srv.close();
    }
  });

  test('small runs, threads 0 and an explicit transport stay on the JS engine', async () => {
    const srv = await rawHttpServer('HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong');
    try {
      const small = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 2, requests: 10 });
      assert.deepEqual(small.generator, { engine: 'js', threads: 0, transport: 'handle' });
      const t0 = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 2, durationMs: 100, threads: 0 });
      assert.equal(t0.generator?.engine, 'js');
      const sock = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 2, durationMs: 100, transport: 'socket' });
      assert.equal(sock.generator?.engine, 'js');
      await assert.rejects(
        runLoad({ host: '127.0.0.1', port: srv.port, requests: 2, engine: 'native', transport: 'socket' }),
        /transport "socket" is the JS engine's/,
      );
    } finally {
      await srv.close();
    }
  });

  test('without the binary: "auto" runs the JS engine and says why; "native" fails, naming the build', async () => {
    const srv = await rawHttpServer('HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong');
    const missing = '/nonexistent/loadgen-engine';
    try {
      const r = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 2, durationMs: 100, nativeEnginePath: missing });
      assert.equal(r.generator?.engine, 'js');
      assert.match(r.generator?.fallback ?? '', /native engine \/nonexistent\/loadgen-engine is not built \(npm run build/);
      assert.ok(r.outcomes.ok > 0);
      await assert.rejects(
        runLoad({ host: '127.0.0.1', port: srv.port, requests: 2, engine: 'native', nativeEnginePath: missing }),
        /engine "native": the native engine \/nonexistent\/loadgen-engine is not built \(npm run build compiles bench\/native\/loadgen-engine\.c\)/,
      );
    } finally {
      await srv.close();
    }
  });

  test('an engine binary that dies is an error naming it, not a hang', async () => {
    // /bin/false is no engine: it exits at once, before it is ready
    await assert.rejects(
      runLoad({ host: '127.0.0.1', port: 9, requests: 2, engine: 'native', nativeEnginePath: '/bin/false' }),
      /load generator engine \/bin\/false ended \(exit 1\) before it was done/,
    );
  });
});
