// The load generator against real nginx and against servers that fail in each
// way it must classify. Everything on 127.0.0.1, ports chosen free.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { runLoad, parseResponse, classifyError, loadResultToJson, type LoadOptions } from '../../bench/src/loadgen.js';
import { expectation, responseProblem } from '../../bench/src/load/response.js';
import { checkTarget, TargetRefusedError, isLoopback, inNonInitialNetns } from '../../bench/src/target.js';
import { startNginx, freePort, type NginxServer } from '../../bench/src/servers.js';
import { summarizeMs, decodeHistogram } from '../../bench/src/histogram.js';
import { tcpServer, rawHttpServer, pongOnIpv6 } from './helpers.js';

describe('target checks (no packet leaves before them)', () => {
  test('loopback and ::1 are allowed, localhost maps to 127.0.0.1', () => {
    assert.equal(checkTarget('127.0.0.1'), '127.0.0.1');
    assert.equal(checkTarget('127.3.4.5'), '127.3.4.5');
    assert.equal(checkTarget('::1'), '::1');
    assert.equal(checkTarget('[::1]'), '::1');
    assert.equal(checkTarget('localhost'), '127.0.0.1');
    assert.ok(isLoopback('::ffff:127.0.0.1'));
  });
  test('anything else is refused without the namespace flag', () => {
    for (const h of ['10.0.0.1', '192.168.1.1', '8.8.8.8', '169.254.255.254', 'fe80::1', 'example.com', '128.0.0.1']) {
      assert.throws(() => checkTarget(h), TargetRefusedError, h);
    }
  });
  test('namespace-local flag: accepted for an address on a local interface', () => {
    // 127.0.0.1 is always on lo; a non-local, non-loopback address is refused in
    // the initial namespace even with the flag.
    assert.equal(checkTarget('127.0.0.1', { namespaceLocal: true }), '127.0.0.1');
    if (!inNonInitialNetns()) {
      assert.throws(() => checkTarget('203.0.113.9', { namespaceLocal: true }), TargetRefusedError);
    }
    assert.throws(() => checkTarget('example.com', { namespaceLocal: true }), TargetRefusedError);
  });
  test('runLoad refuses a non-loopback target before connecting', async () => {
    await assert.rejects(runLoad({ host: '192.0.2.1', port: 80, requests: 1 }), TargetRefusedError);
  });
  test('runLoad needs a bound', async () => {
    await assert.rejects(runLoad({ host: '127.0.0.1', port: 80 }), /requests.*durationMs/);
  });
});

describe('response parsing', () => {
  test('content-length, chunked, truncated', () => {
    assert.deepEqual(parseResponse(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong')), { complete: true, status: 200, body: 'pong' });
    assert.equal(parseResponse(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\npo\r\n2\r\nng\r\n0\r\n\r\n')).body, 'pong');
    assert.equal(parseResponse(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npong')).reason, 'truncated');
    assert.equal(parseResponse(Buffer.from('')).reason, 'empty');
    assert.equal(parseResponse(Buffer.from('garbage\r\n\r\n')).reason, 'bad-status-line');
    assert.equal(classifyError('EPIPE'), 'reset');
    assert.equal(classifyError('EADDRNOTAVAIL'), 'badResponse');
  });

  // The engines' byte-level check of the common ok response must give
  // parseResponse's verdict on everything, the odd cases included.
  test('the quick ok check agrees with parseResponse', () => {
    const slow = (b: Buffer, body: string | null): string | null => {
      const p = parseResponse(b);
      if (!p.complete) return p.reason ?? 'incomplete';
      if (p.status !== 200) return `status-${p.status}`;
      if (body !== null && p.body !== body) return 'wrong-body';
      return null;
    };
    const responses = [
      'HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong',
      'HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\npong',
      'HTTP/1.0 200 OK\r\nCONTENT-LENGTH:4\r\n\r\npong',
      'HTTP/1.0 200 OK\r\nContent-Length: \t4\r\n\r\npong',
      'HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npongextra',
      'HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npon',
      'HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\npong!',
      'HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nnope',
      'HTTP/1.0 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\npong!',
      'HTTP/1.0 200 OK\r\nX-Content-Length: 9\r\nContent-Length: 4\r\n\r\npong',
      'HTTP/1.0 200 OK\r\nContent-Length: 4x\r\n\r\npong',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npong\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npong\r\n0\r\n\r\n',
      'HTTP/1.0 200 OK\r\n\r\npong',
      'HTTP/1.0 200 OK\nContent-Length: 4\n\npong',
      'HTTP/1.0 2000 OK\r\nContent-Length: 4\r\n\r\npong',
      'HTTP/1.2 200 OK\r\nContent-Length: 4\r\n\r\npong',
      'HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\npong',
      'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n',
      'HTTP/1.1 200',
      '',
      'garbage\r\n\r\n',
    ];
    for (const r of responses) {
      const b = Buffer.from(r, 'latin1');
      for (const body of ['pong', 'pong!', null]) {
        assert.equal(responseProblem(b, b.length, expectation(body)), slow(b, body), `${JSON.stringify(r)} expecting ${JSON.stringify(body)}`);
        // as the engines call it: the response at the start of a reused, larger buffer
        const reused = Buffer.concat([b, Buffer.from('\r\nContent-Length: 4\r\n\r\npong\r\n\r\n', 'latin1')]);
        assert.equal(responseProblem(reused, b.length, expectation(body)), slow(b, body), `${JSON.stringify(r)} in a reused buffer`);
      }
    }
    // a body that UTF-8 cannot carry never matches, as with the string compare
    const lone = '\ud800';
    const b = Buffer.concat([Buffer.from('HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n'), Buffer.from(lone)]);
    assert.equal(responseProblem(b, b.length, expectation(lone)), slow(b, lone));
  });
});

describe('against real nginx', () => {
  let ng: NginxServer;
  before(async () => {
    ng = await startNginx({ workers: 1 });
  });
  after(async () => {
    await ng?.stop();
  });

  test('closed loop: every request ok, histogram sane', async () => {
    const r = await runLoad({ host: '127.0.0.1', port: ng.port, concurrency: 20, requests: 2000, timeline: true });
    assert.equal(r.requests, 2000);
    assert.equal(r.outcomes.ok, 2000, JSON.stringify(r.details));
    assert.equal(r.failed, 0);
    assert.equal(r.stoppedBy, 'requests');
    assert.equal(r.latency.totalCount, 2000);
    const s = summarizeMs(r.latency);
    assert.ok(s.min > 0 && s.min <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.p999 && s.p999 <= s.max, JSON.stringify(s));
    assert.ok(s.max < 5000, `max ${s.max}`);
    // HDR at 3 significant digits vs the exact values from the timeline
    const exact = r.timeline!.map((t) => t.latencyMs).sort((a, b) => a - b);
    const p50 = exact[Math.ceil(0.5 * exact.length) - 1]!;
    assert.ok(Math.abs(s.p50 - p50) <= Math.max(0.01, p50 * 0.01), `hdr p50 ${s.p50} vs exact ${p50}`);
    assert.equal(r.timeline!.length, 2000);
    assert.ok(r.timeline!.every((t) => t.outcome === 'ok' && t.startMs >= 0));
    // JSON form round-trips the histogram
    const j = loadResultToJson(r);
    assert.equal(decodeHistogram(j.latencyHdr).totalCount, 2000);
    assert.equal(j.latencyMs.p99, s.p99);
  });

  test('failures-only timeline: ok requests kept only at or over slowMs', async () => {
    const base = { host: '127.0.0.1', port: ng.port, concurrency: 5, requests: 300 } as const;
    const none = await runLoad({ ...base, timeline: { limit: 1000, failuresOnly: true } });
    assert.equal(none.outcomes.ok, 300);
    assert.deepEqual(none.timeline, []);
    const all = await runLoad({ ...base, timeline: { limit: 1000, failuresOnly: true, slowMs: 0 } });
    assert.equal(all.timeline!.length, 300);
    // A threshold between the fastest and the slowest keeps exactly those at or over it (each engine feeds the same tally).
    const lat = all.timeline!.map((t) => t.latencyMs).sort((a, b) => a - b);
    const mid = await runLoad({ ...base, engine: 'native', timeline: { limit: 1000, failuresOnly: true, slowMs: lat[150]! } });
    assert.ok(
      mid.timeline!.every((t) => t.outcome === 'ok' && t.latencyMs >= lat[150]!),
      JSON.stringify(mid.timeline!.slice(0, 3)),
    );
    const hist = summarizeMs(mid.latency);
    assert.ok(mid.timeline!.length <= 300 && (hist.max < lat[150]! ? mid.timeline!.length === 0 : mid.timeline!.length > 0));
  });

  test('worker threads: the request bound holds across them, records come back whole', async () => {
    const t0 = Date.now();
    const r = await runLoad({ host: '127.0.0.1', port: ng.port, concurrency: 7, requests: 3001, threads: 2, timeline: true });
    assert.deepEqual(r.generator?.threads, 2);
    assert.equal(r.requests, 3001);
    assert.equal(r.outcomes.ok, 3001, JSON.stringify(r.details));
    assert.equal(r.stoppedBy, 'requests');
    assert.equal(r.latency.totalCount, 3001);
    assert.equal(r.timeline!.length, 3001);
    // one clock for both threads: every start lies within the run, and its
    // wall-clock time (as the bench charges failures to reloads) too
    assert.ok(
      r.timeline!.every((t) => t.startMs >= 0 && t.startMs + t.latencyMs <= r.elapsedMs + 1),
      JSON.stringify(r.timeline!.find((t) => t.startMs < 0 || t.startMs + t.latencyMs > r.elapsedMs + 1)),
    );
    assert.ok(r.startedAt >= t0 - 1 && r.startedAt + r.elapsedMs <= Date.now() + 1);
  });

  test('the socket transport gives the same result', async () => {
    const r = await runLoad({ host: '127.0.0.1', port: ng.port, concurrency: 5, requests: 200, transport: 'socket' });
    assert.equal(r.generator?.transport, 'socket');
    assert.equal(r.outcomes.ok, 200, JSON.stringify(r.details));
  });

  test('HTTP/1.1 with Connection: close also ok', async () => {
    const r = await runLoad({ host: '127.0.0.1', port: ng.port, concurrency: 4, requests: 50, httpVersion: '1.1' });
    assert.equal(r.outcomes.ok, 50, JSON.stringify(r.details));
  });

  test('open loop at a fixed rate: ~rate x duration requests, none missed', async () => {
    const r = await runLoad({ host: '127.0.0.1', port: ng.port, mode: 'open', rate: 200, durationMs: 1000 });
    assert.ok(r.open);
    assert.ok(r.open.scheduled >= 195 && r.open.scheduled <= 201, `scheduled ${r.open.scheduled}`);
    assert.equal(r.open.missed, 0);
    assert.equal(r.open.started, r.open.scheduled);
    assert.equal(r.outcomes.ok, r.open.started);
    assert.equal(r.stoppedBy, 'duration');
  });

  test('duration bound stops a closed loop by itself', async () => {
    const t0 = Date.now();
    const r = await runLoad({ host: '127.0.0.1', port: ng.port, concurrency: 10, durationMs: 500 });
    assert.equal(r.stoppedBy, 'duration');
    assert.ok(Date.now() - t0 < 2000);
    assert.ok(r.requests > 10);
    assert.equal(r.failed, 0);
  });

  test('localAddress: connects from the chosen source address', async () => {
    const srv = await rawHttpServer('HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong');
    try {
      const r = await runLoad({ host: '127.0.0.1', port: srv.port, localAddress: '127.0.0.2', concurrency: 2, requests: 4 });
      assert.equal(r.outcomes.ok, 4, JSON.stringify(r.details));
      assert.ok(
        srv.peers.every((p) => p === '127.0.0.2'),
        srv.peers.join(','),
      );
    } finally {
      await srv.close();
    }
  });
});

describe('IPv6 loopback', () => {
  test('::1 target works (skipped when lo has no ::1)', async (t) => {
    const srv = await pongOnIpv6(t);
    if (!srv) return;
    try {
      const r = await runLoad({ host: '::1', port: srv.port, concurrency: 2, requests: 10 });
      assert.equal(r.outcomes.ok, 10, JSON.stringify(r.details));
      assert.equal(r.target.host, '::1');
    } finally {
      await srv.close();
    }
  });
});

// Every way a request fails, in each way the generator can run: on the calling
// thread or in worker threads (the open loop: in one), over libuv handles or
// net.Socket, or in the native engine's process (closed loop only).
const VARIANTS: Array<[string, Partial<LoadOptions>]> = [
  ['calling thread', { threads: 0 }],
  ['2 worker threads', { threads: 2 }],
  ['net.Socket transport', { threads: 0, transport: 'socket' }],
  ['native engine, 2 threads', { engine: 'native', threads: 2 }],
];

for (const [variant, v] of VARIANTS)
  describe(`failure outcomes (${variant})`, () => {
    test('closed port: refused', async () => {
      const port = await freePort();
      const r = await runLoad({ host: '127.0.0.1', port, concurrency: 5, requests: 20, ...v });
      assert.equal(r.outcomes.refused, 20);
      assert.equal(r.failed, 20);
      assert.equal(r.details.ECONNREFUSED, 20);
      assert.equal(r.failedLatency.totalCount, 20);
      assert.equal(r.latency.totalCount, 0);
    });

    test('server that resets: reset', async () => {
      const srv = await tcpServer((s) => s.resetAndDestroy());
      try {
        const r = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 5, requests: 20, ...v });
        assert.equal(r.outcomes.reset, 20, JSON.stringify(r.outcomes));
      } finally {
        await srv.close();
      }
    });

    test('server that accepts and never answers: timeout', async () => {
      const srv = await tcpServer(() => undefined);
      try {
        const t0 = Date.now();
        const r = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 5, requests: 5, requestTimeoutMs: 300, ...v });
        assert.equal(r.outcomes.timeout, 5);
        assert.equal(r.details['timeout-response'], 5);
        assert.ok(Date.now() - t0 < 2000);
        const f = summarizeMs(r.failedLatency);
        assert.ok(f.min >= 290 && f.max < 1000, JSON.stringify(f));
      } finally {
        await srv.close();
      }
    });

    test('non-200, wrong body, empty close: badResponse with reasons', async () => {
      const cases: Array<[string, string]> = [
        ['HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n', 'status-503'],
        ['HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nnope', 'wrong-body'],
        ['', 'empty'],
        ['HTTP/1.0 200 OK\r\nContent-Length: 40\r\n\r\npong', 'truncated'],
      ];
      for (const [resp, reason] of cases) {
        const srv = await rawHttpServer(resp);
        try {
          const r = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 2, requests: 4, ...v });
          assert.equal(r.outcomes.badResponse, 4, `${reason}: ${JSON.stringify(r.outcomes)}`);
          assert.equal(r.details[reason], 4, `${reason}: ${JSON.stringify(r.details)}`);
        } finally {
          await srv.close();
        }
      }
    });

    test('oversized response: badResponse too-large', async () => {
      const srv = await rawHttpServer(`HTTP/1.0 200 OK\r\nContent-Length: 70000\r\n\r\n${'x'.repeat(70_000)}`);
      try {
        const r = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 2, requests: 4, ...v });
        assert.equal(r.outcomes.badResponse, 4, JSON.stringify(r.outcomes));
        assert.equal(r.details['too-large'], 4, JSON.stringify(r.details));
      } finally {
        await srv.close();
      }
    });

    test('a source address that is not ours: badResponse with the bind error, and the run goes on', async () => {
      const port = await freePort();
      const r = await runLoad({ host: '127.0.0.1', port, localAddress: '192.0.2.1', concurrency: 3, requests: 30, ...v });
      assert.equal(r.requests, 30);
      assert.equal(r.outcomes.badResponse, 30, JSON.stringify(r.outcomes));
      assert.equal(r.details.EADDRNOTAVAIL, 30, JSON.stringify(r.details));
    });

    // Not a variant of the native engine: the open loop runs on the JS engine only (native-engine.test.ts: asking for both is refused).
    if (v.engine !== 'native')
      test('open loop at the in-flight cap counts requests it could not start', async () => {
        const srv = await tcpServer(() => undefined);
        try {
          const r = await runLoad({
            host: '127.0.0.1',
            port: srv.port,
            mode: 'open',
            rate: 100,
            durationMs: 500,
            maxInFlight: 5,
            requestTimeoutMs: 1500,
            ...v,
          });
          assert.ok(r.open);
          assert.equal(r.open.started, 5);
          assert.ok(r.open.missed >= 40, `missed ${r.open.missed}`);
          assert.equal(r.open.started + r.open.missed, r.open.scheduled);
          assert.equal(r.outcomes.timeout, 5);
        } finally {
          await srv.close();
        }
      });

    test('hard deadline ends a run with requests stuck in flight', async () => {
      const srv = await tcpServer(() => undefined);
      try {
        const t0 = Date.now();
        const r = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 3, durationMs: 100, deadlineMs: 400, requestTimeoutMs: 10_000, ...v });
        const el = Date.now() - t0;
        assert.ok(el >= 350 && el < 1500, `elapsed ${el}`);
        assert.equal(r.stoppedBy, 'deadline');
        assert.equal(r.aborted, 3);
        assert.equal(r.requests, 0);
      } finally {
        await srv.close();
      }
    });

    test('abort signal stops starting new requests', async () => {
      const srv = await rawHttpServer('HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong');
      try {
        const ac = new AbortController();
        setTimeout(() => ac.abort(), 200);
        const r = await runLoad({ host: '127.0.0.1', port: srv.port, concurrency: 2, durationMs: 10_000, signal: ac.signal, ...v });
        assert.equal(r.stoppedBy, 'signal');
        assert.ok(r.elapsedMs < 2000);
        assert.equal(r.failed, 0);
      } finally {
        await srv.close();
      }
    });
  });
