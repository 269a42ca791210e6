/**
 * An application-level race, on demand: a request sent on a keep-alive
 * connection that the server is closing. The server closes an idle connection
 * after its keep-alive timeout; if the client's next request leaves before the
 * server's FIN arrives, the request reaches a socket the server has closed, and
 * the kernel answers RST (RFC 1122: data for a closed socket is an abort; Linux
 * counts it as TcpExtTCPAbortOnData). The client sees ECONNRESET and no response.
 * In production the window is the FIN's flight time; `synhold buffer` holds the
 * server's FIN (tcp, sport=server port, flags FIN, egress) so the window stays
 * open until the client's request is out.
 *
 *   race   Node's http client with a keep-alive Agent: the request fails with
 *          ECONNRESET (req.reusedSocket: it went out on the old connection).
 *   retry  the client-side fix Node's docs describe for exactly this: a request
 *          that fails with ECONNRESET on a reused socket, before any response, is
 *          retried once on a fresh connection if it is idempotent (a GET). Same
 *          held FIN, same RST (the counter still grows), and the client gets its answer.
 *
 * (The server-side fix is ordering the timeouts: the client's idle timeout shorter
 * than the server's keep-alive timeout, so the client always closes first; then
 * there is no server FIN to hold.)
 *
 * Run (root, after `npm run build`): node dist/examples/races/keepalive-race.js [RUNS]
 */
import { pathToFileURL } from 'node:url';
import { buffer } from '../../src/index.js';
import { counters, grew, ssCount, startPeer, until } from './kernel.js';

export const PORT = 18081;
/** The server's keep-alive timeout: it closes an idle connection this long after its last response. */
const KEEPALIVE_MS = 100;

/**
 * One node process with the server (a keep-alive timeout, announced to nobody)
 * and the client (node:http with an Agent keeping one connection alive). `first` and `second` are
 * stdin lines: each sends one GET and prints what came back, or the error.
 */
const PEER_JS = `
const http = require('http');
const [port, keepAliveMs, retry] = [Number(process.argv[1]), Number(process.argv[2]), process.argv[3] === 'retry'];
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
setTimeout(() => process.exit(3), 30000).unref();
// An HTTP/1.1 server that closes a connection idle for keepAliveMs and, like
// nginx by default, does not announce it (no "Keep-Alive: timeout=" header:
// node:http's own server sends one, and Node's Agent then stops reusing the
// connection a second before the server would close it).
const server = require('net').createServer((s) => {
  let idle, buf = '';
  s.on('data', (d) => {
    buf += d;
    for (let i; (i = buf.indexOf('\\r\\n\\r\\n')) >= 0; buf = buf.slice(i + 4)) {
      const body = 'hello ' + buf.slice(0, i).split(' ')[1];
      s.write('HTTP/1.1 200 OK\\r\\nContent-Length: ' + body.length + '\\r\\n\\r\\n' + body);
      clearTimeout(idle);
      idle = setTimeout(() => s.destroy(), keepAliveMs);
    }
  });
  s.on('error', () => {});
});
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function get(path, cb) {
  const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
    let body = '';
    res.on('data', (d) => (body += d));
    res.on('end', () => cb(null, body, req.reusedSocket));
  });
  req.on('error', (e) => cb(e, null, req.reusedSocket));
}
// The fix: an idempotent request that failed on a reused connection before any
// response may never have reached the server's application: send it again, once.
function getRetrying(path, cb) {
  get(path, (err, body, reused) => {
    if (err && reused && err.code === 'ECONNRESET') {
      emit({ ev: 'retrying', error: err.code, message: err.message });
      return get(path, cb);
    }
    cb(err, body, reused);
  });
}
const report = (ev) => (err, body, reused) => emit({ ev, error: err ? err.code : null, message: err ? err.message : null, body, reused });
server.listen(port, '127.0.0.1', () => emit({ ev: 'listening' }));
require('readline').createInterface({ input: process.stdin }).on('line', (l) => {
  if (l === 'first') get('/first', report('first'));
  if (l === 'second') (retry ? getRetrying : get)('/second', report('result'));
});
`;

export type KeepaliveWay = 'race' | 'retry';

export interface KeepaliveOutcome {
  way: KeepaliveWay;
  /** `ss state fin-wait-1` on the server's port when the second request went: the server had closed, its FIN held. */
  serverFinWait1: number;
  /** The client's own view of the second request: its error code and message, or the body. */
  error: string | null;
  message: string | null;
  body: string | null;
  /** Whether it went out on the kept-alive connection (Node's req.reusedSocket; for retry, the retry's own). */
  reused: boolean;
  /** The retrying client's first failure (retry only). */
  retried: string | null;
  /** Growth of the namespace's counters while the second request ran (FIN still held). */
  grew: Record<string, number>;
}

const COUNTERS = ['TcpExtTCPAbortOnData', 'TcpOutRsts'];

/** One run of the race in `netns` (an empty namespace with lo up); leaves nothing running. */
export async function keepaliveRace(netns: string, way: KeepaliveWay): Promise<KeepaliveOutcome> {
  const peer = startPeer(netns, [process.execPath, '-e', PEER_JS, String(PORT), String(KEEPALIVE_MS), way]);
  try {
    await peer.next('listening');
    // Only the server's FIN: every other packet of the connection flows.
    const b = await buffer({ netns, sport: PORT, tcpFlags: 'FIN', maxHoldMs: 15_000, control: false });
    try {
      peer.send('first');
      const first = await peer.next('first');
      if (first.body !== 'hello /first') throw new Error(`the first request failed: ${JSON.stringify(first)}`);
      // The server's keep-alive timeout fires: it closes; the buffer holds its FIN, so the client cannot know.
      await until("the server's FIN held", async () => ((await b.list()).packets ?? []).some((p) => p.sport === PORT && p.flags?.includes('FIN')));
      const serverFinWait1 = ssCount(netns, 'fin-wait-1', PORT);
      const before = counters(netns);
      peer.send('second');
      const result = await peer.next('result');
      const retrying = way === 'retry' ? await peer.next('retrying') : undefined;
      const outcome: KeepaliveOutcome = {
        way,
        serverFinWait1,
        error: result.error as string | null,
        message: result.message as string | null,
        body: result.body as string | null,
        reused: result.reused === true,
        retried: retrying ? (retrying.error as string) : null,
        grew: grew(netns, before, COUNTERS),
      };
      return outcome;
    } finally {
      await b.release(); // the FIN goes now, to a client that already knows
    }
  } finally {
    peer.kill();
  }
}

/** One line per run, for people. */
export function describeKeepalive(o: KeepaliveOutcome): string {
  const got =
    (o.body !== null ? `answer "${o.body}"` : `error ${o.error} (${o.message})`) + (o.reused ? ' on the kept-alive connection' : ' on a new connection');
  const r = o.retried ? ` after a retry (first try: ${o.retried})` : '';
  return `${o.way.padEnd(6)} server fin-wait-1 ${o.serverFinWait1}: ${got}${r}; grew ${JSON.stringify(o.grew)}`;
}

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 1);
  const { withNetns } = await import('../../test/helpers/netns.js');
  for (const way of ['race', 'retry'] as const) {
    for (let i = 0; i < runs; i++) console.log(describeKeepalive(await withNetns((ns) => keepaliveRace(ns.name, way))));
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
