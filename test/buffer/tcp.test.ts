/**
 * synhold buffer on an established TCP connection, both directions, through the
 * library (the CLI is a thin client of the same owner; cli.test.ts runs it):
 * every epoch is held until its step, then arrives whole, in order, byte for
 * byte; what `list` reports is what was sent; nothing of it is retransmitted.
 * Checked against the kernel's own counters (/proc nfnetlink_queue, nstat).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { withNetns } from '../helpers/netns.js';
import { buffer } from '../../src/buffer/buffer.js';
import type { HeldPacket } from '../../src/buffer/held.js';
import { patientTcp, nstat, nstatAll, packetsOf, procQueue, startPair, until } from './peers.js';

const PORT = 16100;
const QUEUE = 7100;
/** How long a held epoch is watched for leaks before it is stepped. */
const QUIET_MS = 300;

/**
 * At egress the sender's TCP still owns what the buffer holds (raw OUTPUT, before the
 * device): it does not retransmit it, and with autocorking on (the default) it keeps
 * small writes behind a held one and sends them as one segment once it leaves. These
 * tests turn autocorking off in their namespace so that one write is one packet.
 */
function oneWriteOnePacket(ns: { exec(cmd: string, args: string[]): string }): void {
  ns.exec('sysctl', ['-qw', 'net.ipv4.tcp_autocorking=0']);
}

/**
 * The data of both directions is held (--tcp-flags PSH: every segment a write
 * ends with), the ACKs are not. Holding the ACKs too is what the buffer does
 * without --tcp-flags (the SYN tests do), but then releasing data while its ACK
 * waits is a loss to the sender, whose recovery (retransmissions, a collapsed
 * congestion window that keeps the next epoch's writes unsent) would become part
 * of the epochs: TCP's behaviour, not the buffer's, and not what this test is about.
 */
test('established TCP, both directions: each epoch held until its step, then delivered in order, byte for byte, no retransmission', async (t) => {
  await withNetns(async (ns) => {
    oneWriteOnePacket(ns);
    patientTcp(ns);
    const pair = await startPair(ns, 'tcp', PORT);
    try {
      const retransBefore = nstat(ns, 'TcpRetransSegs');
      const spuriousBefore = nstat(ns, 'TcpExtTCPSpuriousRtxHostQueues');
      await using b = await buffer({ netns: ns.name, dport: PORT, direction: 'both', tcpFlags: 'PSH', maxHoldMs: 30_000 });
      const sent = { c2s: [] as Buffer[], s2c: [] as Buffer[] };
      for (let epoch = 1; epoch <= 4; epoch++) {
        // Three writes each way: six packets in this epoch, all of them held.
        for (let i = 0; i < 3; i++) {
          for (const way of ['c2s', 's2c'] as const) {
            const chunk = randomBytes(200 + ((epoch * 7 + i * 13) % 900));
            sent[way].push(chunk);
            pair.send(way, chunk);
          }
        }
        const want = { server: Buffer.concat(sent.c2s).length, client: Buffer.concat(sent.s2c).length };
        const before = { server: pair.total('server'), client: pair.total('client') };
        await until(`epoch ${epoch}'s data in the queue`, async () => (await packetsOf(b)).filter((p) => p.flags?.includes('PSH')).length >= 6);
        await sleep(QUIET_MS);
        assert.deepEqual({ server: pair.total('server'), client: pair.total('client') }, before, `epoch ${epoch}: nothing arrived before the step`);
        const held = await packetsOf(b);
        assert.equal(procQueue(ns, QUEUE)?.queueTotal, held.length, `epoch ${epoch}: /proc's queue_total agrees with list (${held.length})`);
        const data = held.filter((p) => p.flags?.includes('PSH'));
        assert.equal(data.length, 6, `epoch ${epoch}: 6 data packets held, got ${JSON.stringify(held)}`);
        assert.equal(held.length, 6, 'and nothing else (no ACK, no retransmission)');
        const ends = (p: HeldPacket) => `${p.sport}>${p.dport}`;
        assert.deepEqual(
          data.map(ends).sort(),
          [...Array<string>(3).fill(`${pair.clientPort}>${PORT}`), ...Array<string>(3).fill(`${PORT}>${pair.clientPort}`)].sort(),
          'three held each way, on the pair ports',
        );
        const step = await b.step();
        assert.equal(step.released, held.length, `epoch ${epoch}: the step released the whole epoch`);
        await until(`epoch ${epoch} delivered`, () => pair.total('server') === want.server && pair.total('client') === want.client);
        const left = await packetsOf(b);
        assert.equal(left.length, 0, `epoch ${epoch}: nothing left held, got ${JSON.stringify(left)}; nstat ${JSON.stringify(nstatAll(ns))}`);
      }
      const end = await b.release();
      assert.equal(end.cause, 'release');
      const got = await pair.dump();
      assert.ok(got.server.equals(Buffer.concat(sent.c2s)), 'the server received exactly what the client sent, in order');
      assert.ok(got.client.equals(Buffer.concat(sent.s2c)), 'the client received exactly what the server sent, in order');
      const retrans = nstat(ns, 'TcpRetransSegs') - retransBefore;
      const spurious = nstat(ns, 'TcpExtTCPSpuriousRtxHostQueues') - spuriousBefore;
      // (With patientTcp no timer fires during an epoch, so TCP never even tries: the egress/ingress tests below show what it does when one does.)
      t.diagnostic(`TcpRetransSegs: ${retrans}; TCPSpuriousRtxHostQueues (retransmissions skipped while held): ${spurious}; released ${end.stepped} by steps`);
      assert.equal(retrans, 0, 'no segment was retransmitted');
      assert.equal(procQueue(ns, QUEUE), undefined, 'the queue is unbound after release');
    } finally {
      pair.kill();
    }
  });
});

test('step --count N releases the oldest N, in order; step --drop drops the oldest', async () => {
  await withNetns(async (ns) => {
    oneWriteOnePacket(ns);
    const pair = await startPair(ns, 'tcp', PORT);
    try {
      await using b = await buffer({ netns: ns.name, dport: PORT, tcpFlags: 'PSH/PSH', maxHoldMs: 30_000 });
      const chunks = [Buffer.from('one|'), Buffer.from('two|'), Buffer.from('three|')];
      for (const c of chunks) {
        pair.send('c2s', c);
        // One write, one segment: wait for each to be queued before the next.
        await until('the segment queued', async () => (await packetsOf(b)).length === chunks.indexOf(c) + 1);
      }
      const first = await b.step({ count: 1 });
      assert.equal(first.released, 1);
      await until('the first chunk delivered', () => pair.total('server') === 4);
      await sleep(QUIET_MS);
      assert.equal(pair.total('server'), 4, 'only the first chunk arrived');
      const rest = await b.step({ count: 5 });
      assert.equal(rest.released, 2, 'a count past what is held releases what is held');
      await until('the rest delivered', () => pair.total('server') === 14);
      assert.equal((await pair.dump()).server.toString(), 'one|two|three|');
      // Drop: the segment is lost in the kernel (queue ids say which); TCP's retransmit brings it back later.
      pair.send('c2s', Buffer.from('four|'));
      const [fourth] = await until('the fourth segment queued', async () => {
        const l = await packetsOf(b);
        return l.length === 1 && l;
      });
      const dropped = await b.step({ drop: true });
      assert.deepEqual([dropped.dropped, dropped.ids], [1, [fourth!.id]]);
      // TCP retransmits what the kernel dropped: the same segment comes back as a new packet, held again.
      const again = await until('the retransmission held', async () => (await packetsOf(b)).find((p) => p.id > fourth!.id), 5000);
      assert.deepEqual([again.flags, again.length, again.sport, again.dport], [fourth!.flags, fourth!.length, fourth!.sport, fourth!.dport]);
      assert.equal(pair.total('server'), 14, 'the dropped segment never reached the server');
      await b.step();
      await until('the retransmission delivered', () => pair.total('server') === 19);
      assert.equal((await pair.dump()).server.toString(), 'one|two|three|four|');
    } finally {
      pair.kill();
    }
  });
});

for (const at of ['egress', 'ingress'] as const) {
  test(`--at ${at} on lo: three writes held 600 ms; ${at === 'egress' ? 'TCP skips its retransmissions (still its packets)' : 'TCP retransmits into the buffer (the packets left it)'}`, async (t) => {
    await withNetns(async (ns) => {
      oneWriteOnePacket(ns);
      const pair = await startPair(ns, 'tcp', PORT);
      try {
        const retransBefore = nstat(ns, 'TcpRetransSegs');
        await using b = await buffer({ netns: ns.name, dport: PORT, at, maxHoldMs: 30_000 });
        for (const c of ['one|', 'two|', 'three|']) {
          pair.send('c2s', Buffer.from(c));
          await sleep(20);
        }
        await sleep(600);
        const held = await packetsOf(b);
        const retrans = nstat(ns, 'TcpRetransSegs') - retransBefore;
        t.diagnostic(`--at ${at}: ${held.length} packets held (${held.map((p) => p.length).join(', ')} bytes), TcpRetransSegs ${retrans}`);
        assert.ok(held.every((p) => p.at === at));
        if (at === 'egress') {
          assert.deepEqual([held.length, retrans], [3, 0], 'one packet per write, none retransmitted');
        } else {
          assert.ok(retrans > 0 && held.length > 3, 'the retransmissions are held too');
        }
        await b.release();
        await until('delivered', () => pair.total('server') === 14);
        assert.equal((await pair.dump()).server.toString(), 'one|two|three|');
      } finally {
        pair.kill();
      }
    });
  });
}
