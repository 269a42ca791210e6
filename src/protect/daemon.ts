/**
 * `synhold daemon`: a long-running holder for one network namespace.
 *
 * Why: a forked holder costs a Node.js start for every reload (~100 ms on the
 * host, far more on a slow machine), paid before the reload can begin. With the
 * daemon running, `protect` asks it over a unix socket instead; the guarantees
 * are the same:
 *  - one connection is one hold; if the connection closes while holding (the
 *    protect process died, even by kill -9), the daemon releases at once;
 *  - if the daemon dies, protect sees its connection close and releases itself;
 *  - max-hold bounds every hold; holds are serialised by the same flock.
 * It also serves Prometheus metrics over HTTP (--metrics HOST:PORT).
 *
 * Protocol: newline-delimited JSON on <state dir>/holder.sock (mode 0600).
 *   {"op":"hold","maxHoldMs":N,"lockWaitMs":N,"ownerPid":N} -> held | error
 *   {"op":"release","reason":"..."}                        -> released | error
 *   {"op":"release-current","reason":"..."} (synhold release) -> released | {"type":"idle"}
 *   {"op":"ping"}                                          -> {"type":"pong","pid":N}
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { backendFor } from '../backends/index.js';
import { SynholdError } from '../model/errors.js';
import { Rtnl } from '../rtnl/rtnl.js';
import { HoldSession, WATCHDOG_REASONS } from './hold-session.js';
import { StateStore } from './state.js';
import { connectUnix, onJsonLines } from './unix-json.js';

export interface DaemonOptions {
  netns?: string;
  /** Serve /metrics here (Prometheus text format). */
  metrics?: { host: string; port: number };
  log?: (line: string) => void;
}

export function daemonSocketPath(store: StateStore): string {
  return join(store.dir, 'holder.sock');
}

/** Hold durations in seconds: buckets for a histogram that spans a fast reload and a stuck one. */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

class Metrics {
  holds = 0;
  watchdog = 0;
  released = 0;
  drops = 0;
  errors = 0;
  sum = 0;
  counts = BUCKETS.map(() => 0);

  observe(seconds: number, released: number, drops: number, reason: string): void {
    this.holds++;
    this.sum += seconds;
    this.released += released;
    this.drops += drops;
    if (WATCHDOG_REASONS.has(reason)) this.watchdog++;
    BUCKETS.forEach((b, i) => {
      if (seconds <= b) this.counts[i]!++;
    });
  }
}

async function render(m: Metrics, store: StateStore, netns: string | undefined, active: HoldSession | undefined): Promise<string> {
  const setup = store.readSetup();
  const lines: string[] = [];
  const metric = (name: string, type: string, help: string, values: [string, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of values) lines.push(`${name}${labels} ${v}`);
  };
  metric('synhold_up', 'gauge', 'Whether synhold is set up here (1) or not (0).', [[setup ? `{backend="${setup.backend}"}` : '', setup ? 1 : 0]]);
  metric('synhold_holding', 'gauge', 'Whether new connections are being held right now.', [['', active ? 1 : 0]]);
  metric('synhold_hold_age_seconds', 'gauge', 'How long the current hold has lasted (0 when not holding).', [
    ['', active ? (Date.now() - active.held.since) / 1000 : 0],
  ]);
  const cum = BUCKETS.map((b, i) => [`{le="${b}"}`, m.counts[i]!] as [string, number]);
  lines.push('# HELP synhold_hold_duration_seconds Duration of holds this daemon owned.', '# TYPE synhold_hold_duration_seconds histogram');
  for (const [l, v] of cum) lines.push(`synhold_hold_duration_seconds_bucket${l} ${v}`);
  lines.push(
    `synhold_hold_duration_seconds_bucket{le="+Inf"} ${m.holds}`,
    `synhold_hold_duration_seconds_sum ${m.sum}`,
    `synhold_hold_duration_seconds_count ${m.holds}`,
  );
  metric('synhold_released_packets_total', 'counter', 'Held packets let through at release (holds this daemon owned).', [['', m.released]]);
  metric('synhold_dropped_packets_total', 'counter', 'Packets dropped during holds because the hold was full (holds this daemon owned).', [['', m.drops]]);
  metric('synhold_watchdog_releases_total', 'counter', 'Holds released because the owner died or max-hold was reached.', [['', m.watchdog]]);
  metric('synhold_hold_errors_total', 'counter', 'Hold requests that failed.', [['', m.errors]]);
  const st = store.readStats();
  metric('synhold_holds_total', 'counter', 'Holds recorded here by any holder (daemon or forked), since setup.', [['', st.holds]]);
  if (setup) {
    const rt = netns ? Rtnl.open({ netns }) : Rtnl.open();
    try {
      const c = await backendFor(setup.backend).counters(setup.backendState, netns ? { rt, netns } : { rt });
      metric('synhold_kernel_held_packets', 'gauge', 'Packets the kernel holds right now (plug qlen / queue_total).', [['', c.heldPackets]]);
      metric('synhold_kernel_dropped_packets', 'counter', 'Drops the kernel counted at the hold since setup.', [['', c.drops]]);
    } catch {
      // Counters are best effort: a scrape must not fail because a qdisc is being replaced.
    } finally {
      rt.close();
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Is a daemon answering on this socket? Its pid, or undefined. */
export async function pingDaemon(path: string, timeoutMs = 200): Promise<number | undefined> {
  const s = await connectUnix(path, timeoutMs);
  if (!s) return undefined;
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      s.destroy();
      resolve(undefined);
    }, timeoutMs);
    onJsonLines<{ pid?: number }>(s, (m) => {
      clearTimeout(t);
      s.destroy();
      resolve(m.pid);
    });
    s.on('error', () => resolve(undefined));
    s.write('{"op":"ping"}\n');
  });
}

export async function runDaemon(opts: DaemonOptions): Promise<{ close(): Promise<void> }> {
  const log = opts.log ?? (() => undefined);
  const store = StateStore.for(opts.netns);
  store.ensure();
  const path = daemonSocketPath(store);
  const other = await pingDaemon(path);
  if (other) throw new SynholdError('ERR_BUSY', `a synhold daemon already runs here (pid ${other})`);
  rmSync(path, { force: true }); // a dead daemon's socket
  const metrics = new Metrics();
  let active: HoldSession | undefined;
  const conns = new Set<Socket>();

  const server: Server = createServer((conn: Socket) => {
    conns.add(conn);
    conn.once('close', () => conns.delete(conn));
    let session: HoldSession | undefined;
    let buf = '';
    const reply = (m: unknown) => {
      if (!conn.destroyed) conn.write(`${JSON.stringify(m)}\n`);
    };
    const finish = async (reason: string) => {
      const s = session;
      if (!s) return undefined;
      session = undefined;
      const r = await s.release(reason);
      if (active === s) active = undefined;
      return r;
    };
    conn.on('close', () => {
      // The owner went away while holding: release now (the watchdog case).
      if (session) void finish('owner gone').catch((e: unknown) => log(`release after owner left failed: ${(e as Error).message}`));
    });
    conn.on('error', () => undefined);
    conn.on('data', (d) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let req: { op?: string; maxHoldMs?: number; lockWaitMs?: number; ownerPid?: number; reason?: string };
        try {
          req = JSON.parse(line) as typeof req;
        } catch {
          reply({ type: 'error', code: 'ERR_PROTOCOL', message: 'not JSON' });
          continue;
        }
        void handle(req).catch((e: unknown) => {
          metrics.errors++;
          reply({ type: 'error', code: (e as SynholdError).code ?? 'ERR_DAEMON', message: (e as Error).message });
        });
      }
    });

    async function handle(req: { op?: string; maxHoldMs?: number; lockWaitMs?: number; ownerPid?: number; reason?: string }): Promise<void> {
      switch (req.op) {
        case 'ping':
          reply({ type: 'pong', pid: process.pid });
          return;
        case 'hold': {
          if (session) throw new SynholdError('ERR_PROTOCOL', 'this connection already holds');
          const s = await HoldSession.start({
            netns: opts.netns,
            maxHoldMs: req.maxHoldMs ?? 5000,
            lockWaitMs: req.lockWaitMs ?? 30_000,
            holderPid: process.pid,
            ownerPid: req.ownerPid,
            via: 'daemon',
          });
          void s.done.then((r) => metrics.observe(r.durationMs / 1000, r.released, r.drops, r.reason));
          if (conn.destroyed) {
            // The owner left while we waited for the lock: do not hold for nobody.
            await s.release('owner gone');
            return;
          }
          session = s;
          active = s;
          // Max-hold releases on its own; tell the owner when it happens.
          void s.done.then((r) => {
            if (session === s) {
              session = undefined;
              if (active === s) active = undefined;
              reply(r);
            }
          });
          reply(s.held);
          return;
        }
        case 'release': {
          const r = await finish(req.reason ?? 'released');
          reply(r ?? { type: 'idle' });
          return;
        }
        case 'release-current': {
          const s = active;
          if (!s) {
            reply({ type: 'idle' });
            return;
          }
          const r = await s.release(req.reason ?? 'released by synhold release');
          if (active === s) active = undefined;
          reply(r);
          return;
        }
        default:
          throw new SynholdError('ERR_PROTOCOL', `unknown op ${String(req.op)}`);
      }
    }
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  writeFileSync(join(store.dir, 'daemon.pid'), `${process.pid}\n`);
  log(`holding on request at ${path}`);

  let http: HttpServer | undefined;
  if (opts.metrics) {
    http = createHttpServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('try /metrics\n');
        return;
      }
      render(metrics, store, opts.netns, active).then(
        (body) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(body),
        (e: unknown) => res.writeHead(500).end(`${(e as Error).message}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      http!.once('error', reject);
      http!.listen(opts.metrics!.port, opts.metrics!.host, () => resolve());
    });
    log(`metrics at http://${opts.metrics.host}:${opts.metrics.port}/metrics`);
  }

  return {
    async close() {
      if (active) await active.release('daemon stopping').catch(() => undefined);
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const c of conns) c.destroy();
      await closed;
      if (http) await new Promise<void>((r) => http!.close(() => r()));
      rmSync(path, { force: true });
      rmSync(join(store.dir, 'daemon.pid'), { force: true });
    },
  };
}
