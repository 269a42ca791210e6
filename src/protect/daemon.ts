/**
 * `synhold daemon`: holds for protect in one network namespace, and serves
 * Prometheus metrics.
 *
 * Why: with it, protect does not open a hold of its own (lock, backend sockets,
 * watchdog); it asks over a unix socket. The guarantees are those of any hold
 * (hold/session.ts): the daemon owns the hold and a watchdog process is its
 * dead-man's switch, which also watches the client protect by pidfd:
 *  - one connection is one hold; if the connection closes while holding (the
 *    client died, even by kill -9), the daemon releases at once, and so would the
 *    watchdog if the daemon were stopped;
 *  - if the daemon dies, its watchdog releases; protect sees its connection close;
 *  - max-hold bounds every hold, whoever is stopped; holds are serialised by the lock.
 * At start it ends any hold a previous instance left behind (under the lock).
 * Protocol: daemon-protocol.ts.
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { backendFor } from '../backends/index.js';
import { BusyError, DaemonProtocolError, NotHoldingError, SynholdError } from '../model/errors.js';
import { Rtnl } from '../rtnl/rtnl.js';
import { isSafetyNet } from './hold/cause.js';
import { recoverUnderLock, releaseHere } from './hold/recover.js';
import { HoldSession } from './hold/session.js';
import { FileLock } from './lock.js';
import { StateStore } from './state.js';
import { connectUnix, onJsonLines } from './unix-json.js';
import { MAX_LINE, parseRequest, type Reply, type Request } from './daemon-protocol.js';
import type { DaemonMetrics, Snapshot } from './metrics.js';

export interface DaemonOptions {
  netns?: string;
  /** Serve /metrics here (Prometheus text format, or OpenMetrics when the scraper asks for it). */
  metrics?: { host: string; port: number };
  log?: (line: string) => void;
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

/** The daemon's state shared by its connections. */
interface DaemonState {
  opts: DaemonOptions;
  /** Only with --metrics: without it, prom-client is never loaded. */
  metrics?: DaemonMetrics;
  active?: HoldSession;
}

/** One client connection: at most one hold, released when the client asks or goes. */
function serveConnection(conn: Socket, d: DaemonState): void {
  let session: HoldSession | undefined;
  let buf = '';
  const reply = (m: Reply) => {
    if (!conn.destroyed) conn.write(`${JSON.stringify(m)}\n`);
  };
  conn.on('close', () => {
    // The client went away while holding: release now (its watchdog would, too).
    if (session) void session.release({ kind: 'owner-gone' }).catch(() => undefined);
  });
  conn.on('error', () => undefined);
  conn.setEncoding('utf8');
  conn.on('data', (chunk: string) => {
    buf += chunk;
    if (buf.length > MAX_LINE && !buf.includes('\n')) {
      reply({ type: 'error', code: 'ERR_DAEMON_PROTOCOL', message: `request longer than ${MAX_LINE} bytes` });
      conn.destroy();
      return;
    }
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const req = parseRequest(buf.slice(0, i));
      buf = buf.slice(i + 1);
      if ('invalid' in req) {
        d.metrics?.holdError();
        reply({ type: 'error', code: 'ERR_DAEMON_PROTOCOL', message: req.invalid });
        continue;
      }
      void handle(req).catch((e: unknown) => {
        d.metrics?.holdError();
        reply({ type: 'error', code: (e as SynholdError).code ?? 'ERR_INTERNAL', message: (e as Error).message });
      });
    }
  });

  async function handle(req: Request): Promise<void> {
    switch (req.op) {
      case 'ping':
        reply({ type: 'pong', pid: process.pid });
        return;
      case 'hold': {
        if (session) throw new DaemonProtocolError('this connection already holds');
        const ac = new AbortController();
        conn.once('close', () => ac.abort('owner-gone'));
        const s = await HoldSession.start({
          ...(d.opts.netns ? { netns: d.opts.netns } : {}),
          maxHoldMs: req.maxHoldMs,
          lockWaitMs: req.lockWaitMs,
          client: req.client,
          via: 'daemon',
          signal: ac.signal,
        });
        if (conn.destroyed) {
          // The client left while the hold was being set up: do not hold for nobody.
          await s.release({ kind: 'owner-gone' });
          return;
        }
        session = s;
        d.active = s;
        void s.done.then((r) => {
          d.metrics?.observeHold(r.durationMs / 1000, r.released, r.drops, isSafetyNet(r.cause));
          if (d.active === s) d.active = undefined;
          session = undefined;
          // Unsolicited when the hold ended on its own; the answer to the client's release otherwise.
          reply({ type: 'released', ...r });
        });
        reply({ type: 'held', ...s.held });
        return;
      }
      case 'release': {
        if (!session) throw new NotHoldingError('this connection holds nothing (the hold ended on its own, and was reported)');
        await session.release(req.cause);
        return;
      }
    }
  }
}

/**
 * Serves holds for `protect` on a unix socket, ends any hold left behind or stuck
 * past its deadline, and serves metrics if asked; resolves once listening, with
 * close() to stop (releasing what it holds).
 * CLI equivalent: `synhold daemon [--metrics HOST:PORT]`.
 */
export async function runDaemon(opts: DaemonOptions): Promise<{ close(): Promise<void> }> {
  const log = opts.log ?? (() => undefined);
  const store = StateStore.for(opts.netns);
  store.ensure();
  const path = store.daemonSocketPath;
  const other = await pingDaemon(path);
  if (other) throw new BusyError(`a synhold daemon already runs here (pid ${other})`);
  rmSync(path, { force: true }); // a dead daemon's socket
  await reapLeftovers(store, opts.netns, log);
  // Created before the socket listens, so that no hold goes uncounted.
  const d: DaemonState = opts.metrics ? { opts, metrics: new (await import('./metrics.js')).DaemonMetrics() } : { opts };
  const conns = new Set<Socket>();
  const server: Server = createServer((conn) => {
    conns.add(conn);
    conn.once('close', () => conns.delete(conn));
    serveConnection(conn, d);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  writeFileSync(store.daemonPidPath, `${process.pid}\n`);
  log(`holding on request at ${path}`);
  const http = opts.metrics && d.metrics ? await serveMetrics(opts.metrics, d.metrics, d, store, log) : undefined;
  const reaper = setInterval(() => void reapStuck(store, opts.netns, log).catch(() => undefined), REAP_EVERY_MS);
  return {
    async close() {
      clearInterval(reaper);
      if (d.active) await d.active.release({ kind: 'daemon-stopping' }).catch(() => undefined);
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const c of conns) c.destroy();
      await closed;
      if (http) await new Promise<void>((r) => http.close(() => r()));
      rmSync(path, { force: true });
      rmSync(store.daemonPidPath, { force: true });
    },
  };
}

/** How often the daemon looks for a hold stuck past its deadline (its owner and watchdog stopped). */
const REAP_EVERY_MS = 100;
/** Past the deadline, how long before the daemon steps in (the watchdog and the owner's backup act first). */
const REAP_GRACE_MS = 300;

/**
 * Any hold here, whoever owns it, that is still on REAP_GRACE_MS after its
 * deadline: its watchdog and owner are stopped (or hung), the one case no
 * process of the hold can end. The daemon, alive, ends it (releaseHere forces
 * the kernel once the lock does not come free).
 */
async function reapStuck(store: StateStore, netns: string | undefined, log: (l: string) => void): Promise<void> {
  const rec = store.readHold();
  if (!rec || Date.now() < rec.deadline + REAP_GRACE_MS) return;
  const setup = store.readSetup();
  if (!setup) return;
  const r = await releaseHere(store, setup, netns, { waitMs: 200, as: 'max-hold' });
  log(`a hold stuck past its deadline (${rec.via} pid ${rec.owner.pid}, watchdog pid ${rec.watchdog.pid}): ${r.how}`);
}

/** A hold left by a previous instance whose watchdog died too (the lock is free): end it. */
async function reapLeftovers(store: StateStore, netns: string | undefined, log: (l: string) => void): Promise<void> {
  const setup = store.readSetup();
  if (!setup) return;
  const lock = FileLock.tryAcquire(store.holdLockPath);
  if (!lock) return; // a live hold: its owner and watchdog have it
  try {
    if (await recoverUnderLock(store, setup, netns)) log('released a hold left behind by processes that are gone');
  } finally {
    lock.release();
  }
}

async function serveMetrics(
  at: { host: string; port: number },
  metrics: DaemonMetrics,
  d: DaemonState,
  store: StateStore,
  log: (l: string) => void,
): Promise<HttpServer> {
  const http = createHttpServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end('try /metrics\n');
      return;
    }
    snapshot(store, d.opts.netns, d.active)
      .then((s) => metrics.render(req.headers.accept, s))
      .then(
        ({ contentType, body }) => res.writeHead(200, { 'content-type': contentType }).end(body),
        (e: unknown) => res.writeHead(500).end(`${(e as Error).message}\n`),
      );
  });
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(at.port, at.host, () => resolve());
  });
  log(`metrics at http://${at.host}:${at.port}/metrics`);
  return http;
}

/** What a scrape reports: the setup and hold records, and the kernel's counters at the hold. */
async function snapshot(store: StateStore, netns: string | undefined, active: HoldSession | undefined): Promise<Snapshot> {
  const setup = store.readSetup();
  const s: Snapshot = {
    backend: setup?.backend,
    // A watchdog's release removes the record before the watchdog exits, and the daemon hears of
    // the release only at that exit (its code): the record gone is not holding, here as in status.
    holdSince: active?.holding && store.readHold() ? active.held.since : undefined,
    holdsTotal: store.readStats().holds,
    kernel: undefined,
  };
  if (!setup) return s;
  const rt = netns ? Rtnl.open({ netns }) : Rtnl.open();
  try {
    s.kernel = await backendFor(setup.backend).counters(setup.backendState, netns ? { rt, netns } : { rt });
  } catch {
    // Counters are best effort: a scrape must not fail because a qdisc is being replaced.
  } finally {
    rt.close();
  }
  return s;
}
