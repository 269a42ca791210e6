/**
 * protect's native unix connection to the daemon (LineConnection, native/netlink_socket.c's
 * connectUnix/streamSend/streamRecv) against a node:net server, the daemon's side: lines split
 * across writes and inside a multi-byte character, a garbled line skipped, the peer's end seen,
 * nobody listening, and a connect to a listener whose backlog is full bounded by its timeout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LineConnection } from '../../src/protect/unix-json.js';

async function withServer(fn: (path: string, conns: Promise<Socket>, server: Server) => Promise<void>, backlog?: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-line-'));
  const path = join(dir, 's.sock');
  const server = createServer();
  const conns = new Promise<Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen({ path, ...(backlog !== undefined ? { backlog } : {}) }, resolve));
  try {
    await fn(path, conns, server);
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('messages both ways; lines split across writes and inside a character; a garbled line skipped; the peer closing ends it', async () => {
  await withServer(async (path, conns) => {
    const c = LineConnection.connect<{ n: number; s?: string }>(path, 200);
    assert.ok(c);
    const got: { n: number; s?: string }[] = [];
    c.onMessage((m) => got.push(m));
    const peer = await conns;
    const fromClient = new Promise<string>((resolve) => {
      let b = '';
      peer.on('data', (d) => {
        b += String(d);
        if (b.endsWith('\n')) resolve(b);
      });
    });
    assert.equal(c.send({ op: 'hold', n: 1 }), true);
    assert.equal(await fromClient, '{"op":"hold","n":1}\n');
    const line = Buffer.from('{"n":2,"s":"h\u00e9ld \u2713"}\n');
    const cut = line.indexOf(0xa9); // inside the two bytes of é
    peer.write(line.subarray(0, cut));
    await sleep(20);
    peer.write(Buffer.concat([line.subarray(cut), Buffer.from('not json\n{"n":3}\n{"n":')]));
    await sleep(20);
    peer.write('4}\n');
    await sleep(20);
    assert.deepEqual(got, [{ n: 2, s: 'h\u00e9ld \u2713' }, { n: 3 }, { n: 4 }]);
    peer.end();
    await c.closed;
    assert.equal(c.send({ n: 5 }), false, 'a closed connection sends nothing');
  });
});

test('nobody listening: undefined, at once; a full backlog: undefined within the timeout', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-line-'));
  try {
    assert.equal(LineConnection.connect(join(dir, 'none.sock'), 200), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  await withServer(async (path) => {
    // The connects below are synchronous, so the server (on this event loop) accepts none of them:
    // its backlog fills, and the next connect must give up within its timeout.
    const held: LineConnection<unknown>[] = [];
    const t0 = performance.now();
    let refused = false;
    for (let i = 0; i < 64 && !refused; i++) {
      const c = LineConnection.connect(path, 150);
      if (c) held.push(c);
      else refused = true;
    }
    const ms = performance.now() - t0;
    for (const c of held) c.close();
    assert.ok(refused, 'some connect gave up');
    assert.ok(ms < 150 * 3 + 500, `gave up within its timeout (${ms.toFixed(0)} ms)`);
  }, 1);
});
