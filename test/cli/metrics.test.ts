/**
 * `synhold daemon --metrics`, scraped over HTTP from a real daemon process that
 * holds for protect in a fresh namespace (nfqueue on this kernel). Dashboards
 * and alert rules (docs/OPERATIONS.md, deploy/prometheus/) use the synhold_*
 * names, so their HELP, TYPE and label sets are compared with what the
 * hand-written renderer wrote before prom-client
 * (test/fixtures/metrics/daemon-8677f57.prom, its capture commands in its
 * header). Oracles: the kernel's queue (/proc), the held client's connect.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { synhold, synholdAsync } from '../helpers/cli.js';
import { startEchoServer } from '../helpers/tcp.js';
import { holdWithClient, kill, PORT, reap, setupNfqueue, until } from '../helpers/faults.js';
import { StateStore } from '../../src/protect/state.js';

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fixtures', 'metrics', 'daemon-8677f57.prom');

/** One exposition, parsed: HELP and TYPE by family, samples by `name{labels}` as written. */
interface Exposition {
  help: Map<string, string>;
  type: Map<string, string>;
  samples: Map<string, number>;
}

function parseExposition(text: string): Exposition {
  const e: Exposition = { help: new Map(), type: new Map(), samples: new Map() };
  for (const line of text.split('\n')) {
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta) (meta[1] === 'HELP' ? e.help : e.type).set(meta[2]!, meta[3]!);
    else if (line && !line.startsWith('#')) {
      const at = line.lastIndexOf(' ');
      e.samples.set(line.slice(0, at), Number(line.slice(at + 1)));
    }
  }
  return e;
}

/** Only synhold's own families (prom-client adds process_* and nodejs_*). */
function ours<T>(m: Map<string, T>): [string, T][] {
  return [...m].filter(([k]) => k.startsWith('synhold_')).sort(([a], [b]) => a.localeCompare(b));
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

interface Daemon {
  pid: number;
  port: number;
  startedAt: number;
  scrape(accept?: string): Promise<{ contentType: string; body: string; e: Exposition }>;
}

/** A set-up namespace with an echo server and `synhold daemon --metrics` for the length of fn. */
async function withMetricsDaemon(fn: (ns: TestNetns, d: Daemon) => Promise<void>): Promise<void> {
  await withNetns(async (ns) => {
    const server = await startEchoServer(ns.name, '127.0.0.1', PORT);
    setupNfqueue(ns);
    const port = await freePort();
    const startedAt = Date.now();
    const p = synholdAsync(['--netns', ns.name, 'daemon', '--metrics', `127.0.0.1:${port}`]);
    try {
      await until('the daemon socket', () => existsSync(StateStore.for(ns.name).daemonSocketPath));
      const scrape = async (accept?: string) => {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`, accept ? { headers: { accept } } : {});
        assert.equal(res.status, 200);
        const body = await res.text();
        return { contentType: res.headers.get('content-type') ?? '', body, e: parseExposition(body) };
      };
      await until('the metrics server', () =>
        scrape().then(
          () => true,
          () => false,
        ),
      );
      await fn(ns, { pid: p.pid, port, startedAt, scrape });
    } finally {
      kill(p.pid, 'SIGTERM');
      const r = await p.done;
      assert.equal(r.status, 0, `the daemon stopped cleanly on SIGTERM: ${r.stderr}`);
      server.kill();
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
}

test('daemon /metrics: the synhold_* names, HELP, TYPE and labels are those of 8677f57; a hold through the daemon is counted', async () => {
  const before = parseExposition(readFileSync(FIXTURE, 'utf8'));
  await withMetricsDaemon(async (ns, d) => {
    const r = synhold(['--netns', ns.name, 'protect', '--', 'true']);
    assert.equal(r.status, 0, r.stderr);
    const { e } = await d.scrape();
    assert.deepEqual(ours(e.help), ours(before.help));
    assert.deepEqual(ours(e.type), ours(before.type));
    assert.deepEqual(
      ours(e.samples).map(([k]) => k),
      ours(before.samples).map(([k]) => k),
    );
    assert.equal(e.samples.get('synhold_up{backend="nfqueue"}'), 1);
    assert.equal(e.samples.get('synhold_holding'), 0);
    assert.equal(e.samples.get('synhold_holds_total'), 1);
    assert.equal(e.samples.get('synhold_hold_duration_seconds_count'), 1);
    assert.equal(e.samples.get('synhold_hold_duration_seconds_bucket{le="+Inf"}'), 1);
    assert.ok(e.samples.get('synhold_hold_duration_seconds_sum')! > 0);
    assert.equal(e.samples.get('synhold_hold_errors_total'), 0);
  });
});

test('daemon /metrics during a hold with a held client, then kill -9 of protect: holding, hold age, kernel held packets; the watchdog release counted', async () => {
  await withMetricsDaemon(async (ns, d) => {
    const h = await holdWithClient(ns, { maxHold: '30s', daemonPid: d.pid });
    try {
      const { e } = await d.scrape();
      assert.equal(e.samples.get('synhold_holding'), 1);
      assert.ok(e.samples.get('synhold_hold_age_seconds')! > 0);
      assert.ok(e.samples.get('synhold_kernel_held_packets')! >= 1, 'the SYN held in the queue');
      kill(h.protectPid, 'SIGKILL');
      assert.equal((await h.client).error, null, 'the held client connected after the release');
      const after = await until('the hold to end', async () => {
        const s = (await d.scrape()).e;
        return s.samples.get('synhold_holding') === 0 && s.samples.get('synhold_hold_duration_seconds_count') === 1 ? s : undefined;
      });
      assert.equal(after.samples.get('synhold_watchdog_releases_total'), 1);
      assert.equal(after.samples.get('synhold_hold_age_seconds'), 0);
    } finally {
      reap([...h.cleanup, h.watchdogPid]);
    }
  });
});

/** What Prometheus 2.x sends when it scrapes (scrape.go's acceptHeader). */
const PROMETHEUS_ACCEPT =
  'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1';

test("daemon /metrics: process and event-loop metrics; OpenMetrics when the scraper prefers it; the text format's counter names unchanged after an OpenMetrics scrape", async () => {
  await withMetricsDaemon(async (_ns, d) => {
    const text = await d.scrape();
    assert.equal(text.contentType, 'text/plain; version=0.0.4; charset=utf-8');
    assert.ok(text.e.samples.get('process_resident_memory_bytes')! > 10e6, 'a Node process uses more than 10 MB');
    const start = text.e.samples.get('process_start_time_seconds')!;
    assert.ok(Math.abs(start - d.startedAt / 1000) < 30, `process_start_time_seconds ${start} is the daemon's start`);
    assert.equal(text.e.type.get('nodejs_eventloop_lag_seconds'), 'gauge');
    assert.equal(text.e.type.get('process_cpu_user_seconds_total'), 'counter');

    const om = await d.scrape(PROMETHEUS_ACCEPT);
    assert.equal(om.contentType, 'application/openmetrics-text; version=1.0.0; charset=utf-8');
    assert.ok(om.body.endsWith('# EOF\n'), 'an OpenMetrics exposition ends with # EOF');
    // OpenMetrics names a counter family without _total and its sample with it.
    assert.equal(om.e.type.get('synhold_released_packets'), 'counter');
    assert.equal(om.e.samples.get('synhold_released_packets_total'), 0);

    // prom-client 15 renames a registry's counters in place when it renders OpenMetrics
    // (prometheus/client_js#829): the text format must not inherit that.
    const again = await d.scrape('text/plain;version=0.0.4');
    assert.equal(again.contentType, 'text/plain; version=0.0.4; charset=utf-8');
    assert.equal(again.e.type.get('synhold_released_packets_total'), 'counter');
    assert.equal(again.e.samples.get('synhold_released_packets_total'), 0);
    const preferText = await d.scrape('application/openmetrics-text;q=0.2, text/plain;q=0.9');
    assert.match(preferText.contentType, /^text\/plain/);
  });
});

test('daemon /metrics: another path is 404', async () => {
  await withMetricsDaemon(async (_ns, d) => {
    const res = await fetch(`http://127.0.0.1:${d.port}/nope`);
    assert.equal(res.status, 404);
    assert.equal(await res.text(), 'try /metrics\n');
  });
});

test("promtool check metrics parses the daemon's exposition; its only lint remarks are the known names", async () => {
  await withMetricsDaemon(async (_ns, d) => {
    const { body } = await d.scrape();
    const r = spawnSync('promtool', ['check', 'metrics'], { input: body, encoding: 'utf8' });
    // Exit 3 is "lint problems", 1 a parse error. The remarks: prom-client's own handle/request
    // gauges, and synhold_kernel_dropped_packets, a counter named without _total before
    // prom-client (kept: dashboards and alert rules use the name).
    assert.equal(r.status, 3, `${r.stdout}${r.stderr}`);
    assert.deepEqual(`${r.stdout}${r.stderr}`.trim().split('\n').sort(), [
      'nodejs_active_handles_total non-counter metrics should not have "_total" suffix',
      'nodejs_active_requests_total non-counter metrics should not have "_total" suffix',
      'nodejs_active_resources_total non-counter metrics should not have "_total" suffix',
      'synhold_kernel_dropped_packets counter metrics should have "_total" suffix',
    ]);
  });
});
