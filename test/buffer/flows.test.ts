/**
 * UDP held and released; what `list` shows against what was sent (IPv4, IPv6); and a filter
 * that holds one flow never delays another (measured, and the kernel's own
 * packet ids say none of it went through the queue).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { withNetns } from '../helpers/netns.js';
import { startClient, startEchoServer } from '../helpers/tcp.js';
import { buffer } from '../../src/buffer/buffer.js';
import { connectFrom, packetsOf, procQueue, startPair, until } from './peers.js';

const QUEUE = 7100;

test('UDP: datagrams held (list shows each one), then released in order by steps', async () => {
  await withNetns(async (ns) => {
    const pair = await startPair(ns, 'udp', 16200, { clientPort: 16201 });
    try {
      await using b = await buffer({ netns: ns.name, proto: 'udp', dport: 16200, maxHoldMs: 30_000 });
      const sent = ['alpha', 'bravo-2', 'charlie-33', 'delta-444', 'echo-5555'].map((s) => Buffer.from(s));
      for (const d of sent) pair.send('c2s', d);
      const held = await until('five datagrams held', async () => {
        const l = await packetsOf(b);
        return l.length === 5 && l;
      });
      assert.deepEqual(
        held.map((p) => [p.proto, p.src, p.sport, p.dst, p.dport, p.length, p.flags]),
        sent.map((d) => ['udp', '127.0.0.1', 16201, '127.0.0.1', 16200, 20 + 8 + d.length, undefined]),
        'list: the 5-tuple and the IP length of each datagram, in the order sent',
      );
      assert.equal(procQueue(ns, QUEUE)?.queueTotal, 5, "/proc's queue_total");
      // The reply direction is not in the filter: it passes at once.
      pair.send('s2c', Buffer.from('pong'));
      await until('the reply delivered', () => pair.total('client') === 4);
      await sleep(200);
      assert.equal(pair.total('server'), 0, 'nothing reached the server while held');
      assert.equal((await b.step({ count: 2 })).released, 2);
      await until('two delivered', () => pair.total('server') === 12);
      assert.equal((await b.step()).released, 3);
      await until('all delivered', () => pair.total('server') === sent.reduce((n, d) => n + d.length, 0));
      assert.equal((await pair.dump()).server.toString(), sent.join(''), 'in order, byte for byte');
      assert.equal(procQueue(ns, QUEUE)?.queueTotal, 0);
    } finally {
      pair.kill();
    }
  });
});

test('list: a held SYN shows its 5-tuple and flags as sent (client port chosen by the test)', async () => {
  await withNetns(async (ns) => {
    const server = await startEchoServer(ns.name, '127.0.0.1', 16300);
    try {
      await using b = await buffer({ netns: ns.name, dst: '127.0.0.1', dport: 16300, direction: 'both', maxHoldMs: 30_000 });
      const pair = connectFrom(ns, 16300, 16301);
      try {
        const [syn] = await until('the SYN held', async () => {
          const l = await packetsOf(b);
          return l.length === 1 && l;
        });
        assert.deepEqual(
          { proto: syn!.proto, src: syn!.src, sport: syn!.sport, dst: syn!.dst, dport: syn!.dport, flags: syn!.flags, at: syn!.at, family: syn!.family },
          { proto: 'tcp', src: '127.0.0.1', sport: 16301, dst: '127.0.0.1', dport: 16300, flags: 'SYN', at: 'egress', family: 4 },
        );
        // A SYN with its options (MSS, SACK, timestamps, window scale): 60 bytes on Linux.
        assert.equal(syn!.length, 60);
        await b.step();
        const [synAck] = await until('the SYN-ACK held (both directions)', async () => {
          const l = await packetsOf(b);
          return l.length === 1 && l;
        });
        assert.deepEqual([synAck!.sport, synAck!.dport, synAck!.flags], [16300, 16301, 'SYN,ACK']);
        await b.step();
        await pair.connected;
      } finally {
        pair.kill();
      }
    } finally {
      server.kill();
    }
  });
});

test('IPv6: with no address the buffer holds both families; a SYN to [::1] is listed as family 6, then released', async () => {
  await withNetns(async (ns) => {
    const server = await startEchoServer(ns.name, '::1', 16310);
    try {
      await using b = await buffer({ netns: ns.name, dport: 16310, maxHoldMs: 30_000 });
      assert.match(ns.exec('ip6tables-save', ['-t', 'raw']), /-A OUTPUT -o lo -p tcp -m tcp --dport 16310 .*-j synhold-buf-7100/);
      const c = connectFrom(ns, 16310, 16311, 30_000, '::1');
      try {
        const [syn] = await until('the IPv6 SYN held', async () => {
          const l = await packetsOf(b);
          return l.length === 1 && l;
        });
        assert.deepEqual([syn!.family, syn!.src, syn!.sport, syn!.dst, syn!.dport, syn!.flags], [6, '::1', 16311, '::1', 16310, 'SYN']);
        await b.release();
        await c.connected;
      } finally {
        c.kill();
      }
    } finally {
      server.kill();
    }
  });
});

test('a filter matches nothing else: another port is never delayed while the buffer holds (measured), and never enters the queue', async (t) => {
  await withNetns(async (ns) => {
    const held = await startEchoServer(ns.name, '127.0.0.1', 16400);
    const other = await startEchoServer(ns.name, '127.0.0.1', 16401);
    try {
      await using b = await buffer({ netns: ns.name, dport: 16400, direction: 'both', maxHoldMs: 30_000 });
      const victim = startClient(ns.name, '127.0.0.1', 16400);
      await until('the held SYN', async () => (await packetsOf(b)).length === 1);
      const idsBefore = procQueue(ns, QUEUE)!.idSequence;
      // 200 round trips on the other port, while the first is held.
      const c = startClient(ns.name, '127.0.0.1', 16401, 200, 1);
      const r = await c.result;
      assert.equal(r.error, null);
      const sorted = [...r.pingMs].sort((x, y) => x - y);
      const p50 = sorted[Math.floor(sorted.length / 2)]!;
      const max = sorted[sorted.length - 1]!;
      t.diagnostic(`other port while holding: connect ${r.connectMs?.toFixed(2)} ms, 200 round trips p50 ${p50.toFixed(3)} ms, max ${max.toFixed(3)} ms`);
      assert.equal(r.pingMs.length, 200);
      assert.ok(r.connectMs! < 50, `the other port's connect was not held (${r.connectMs} ms)`);
      assert.ok(max < 50, `no round trip on the other port was held (max ${max} ms)`);
      const k = procQueue(ns, QUEUE)!;
      assert.equal(k.idSequence, idsBefore, 'the kernel queued none of the other port packets (id_sequence unchanged)');
      assert.equal(k.queueTotal, 1, 'the held SYN is still the only packet held');
      victim.kill();
    } finally {
      held.kill();
      other.kill();
    }
  });
});
