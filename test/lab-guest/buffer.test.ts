/**
 * synhold buffer with the plug backend, on a kernel that has sch_plug. These
 * tests run INSIDE the kernel lab (test/lab/guest-suite.test.ts boots it); each
 * uses a fresh namespace there and checks the kernel with tc -j, ip -j and
 * nstat, not with synhold's own decoder.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createNetns, withNetns, type TestNetns } from '../helpers/netns.js';
import { synhold } from '../helpers/cli.js';
import { startEchoServer } from '../helpers/tcp.js';
import { buffer } from '../../src/buffer/buffer.js';
import { connectFrom, patientTcp, nstat, startOwner, startPair, until } from '../buffer/peers.js';

/** The lab is slow (one CPU, ~50 ms per process spawn): waits are generous; the bounds that matter are asserted separately. */
const WAIT_MS = 60_000;

interface TcQdisc {
  kind: string;
  qlen?: number;
}

/** The plug's queue length as tc sees it (egress: in lo's root prio). */
function plugQlen(ns: TestNetns): number | undefined {
  const q = (ns.tcJson(['-s', 'qdisc', 'show', 'dev', 'lo']) as TcQdisc[]).find((x) => x.kind === 'plug');
  return q?.qlen;
}

/** Links, lo's qdiscs and lo's filters (on the root and on an egress hook): everything a plug buffer may create. */
function tcState(ns: TestNetns): string {
  const links = (ns.ipJson(['link', 'show']) as { ifname: string }[]).map((l) => l.ifname);
  return JSON.stringify([links, ns.tcJson(['qdisc', 'show', 'dev', 'lo']), ns.tcJson(['filter', 'show', 'dev', 'lo'])]);
}

test('plug (auto): established TCP, data held both ways, released epoch by epoch, byte for byte, no retransmission', async (t) => {
  await withNetns(async (ns) => {
    ns.exec('sysctl', ['-qw', 'net.ipv4.tcp_autocorking=0']);
    patientTcp(ns);
    const before = tcState(ns);
    const pair = await startPair(ns, 'tcp', 16100);
    try {
      const retransBefore = nstat(ns, 'TcpRetransSegs');
      const b = await buffer({ netns: ns.name, dport: 16100, direction: 'both', tcpFlags: 'PSH', maxHoldMs: 120_000 });
      try {
        assert.equal(b.backend, 'plug', 'auto picks plug where the kernel has it');
        const sent = { c2s: [] as Buffer[], s2c: [] as Buffer[] };
        for (let epoch = 1; epoch <= 3; epoch++) {
          for (let i = 0; i < 2; i++) {
            for (const way of ['c2s', 's2c'] as const) {
              const chunk = randomBytes(100 + epoch * 10 + i);
              sent[way].push(chunk);
              pair.send(way, chunk);
            }
          }
          await until(`epoch ${epoch}: 4 packets in the plug (tc)`, () => plugQlen(ns) === 4, WAIT_MS);
          const seen = { server: pair.total('server'), client: pair.total('client') };
          await sleep(300);
          assert.deepEqual({ server: pair.total('server'), client: pair.total('client') }, seen, 'nothing arrives before the step');
          assert.equal((await b.list()).heldPackets, 4, 'list counts what tc counts');
          const step = await b.step();
          assert.equal(step.released, 4);
          const want = { server: Buffer.concat(sent.c2s).length, client: Buffer.concat(sent.s2c).length };
          await until(`epoch ${epoch} delivered`, () => pair.total('server') === want.server && pair.total('client') === want.client, WAIT_MS);
        }
        const got = await pair.dump();
        assert.ok(got.server.equals(Buffer.concat(sent.c2s)) && got.client.equals(Buffer.concat(sent.s2c)), 'byte for byte, in order');
        const retrans = nstat(ns, 'TcpRetransSegs') - retransBefore;
        t.diagnostic(`plug: TcpRetransSegs ${retrans}`);
        assert.equal(retrans, 0, 'no retransmission counted by the kernel');
        await assert.rejects(b.step({ count: 1 }), /releases whole epochs only/);
      } finally {
        await b.release();
      }
      assert.equal(tcState(ns), before, 'the IFB, its plug, the clsact and the filters are gone');
    } finally {
      pair.kill();
    }
  });
});

test('plug: owner killed with SIGKILL: the held client connects within 50 ms; release then removes what the watchdog left', async (t) => {
  await withNetns(async (ns) => {
    const server = await startEchoServer(ns.name, '127.0.0.1', 16500);
    try {
      const before = tcState(ns);
      const owner = await startOwner(ns, ['--dport', '16500', '--backend', 'plug', '--max-hold', '120s']);
      const client = connectFrom(ns, 16500, 0, WAIT_MS);
      await until('the SYN in the plug (tc)', () => plugQlen(ns) === 1, WAIT_MS);
      const killedAt = Date.now();
      process.kill(owner.pid, 'SIGKILL');
      const connectedAt = await client.connected;
      client.kill();
      t.diagnostic(`plug: connected ${connectedAt - killedAt} ms after the owner's SIGKILL`);
      assert.ok(connectedAt - killedAt < 50, `connected ${connectedAt - killedAt} ms after the kill`);
      await until('the watchdog deleted the filters', () => (ns.tcJson(['filter', 'show', 'dev', 'lo', 'parent', '5304:']) as unknown[]).length === 0, WAIT_MS);
      const r = synhold(['--netns', ns.name, 'buffer', 'release']);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /no owner was alive/);
      assert.equal(tcState(ns), before);
    } finally {
      server.kill();
    }
  });
});

test('plug: UDP datagrams held (tc counts them, list too), then released by a step, in order', async () => {
  await withNetns(async (ns) => {
    const before = tcState(ns);
    const pair = await startPair(ns, 'udp', 16200, { clientPort: 16201 });
    try {
      const b = await buffer({ netns: ns.name, proto: 'udp', dport: 16200, backend: 'plug', maxHoldMs: 120_000 });
      try {
        const sent = ['alpha', 'bravo-2', 'charlie-33'].map((s) => Buffer.from(s));
        for (const d of sent) pair.send('c2s', d);
        await until('three datagrams in the plug (tc)', () => plugQlen(ns) === 3, WAIT_MS);
        const held = await b.list();
        // A qdisc counts whole frames: lo's 14-byte Ethernet header, IPv4 20, UDP 8, the payload.
        const frames = sent.reduce((n, d) => n + 14 + 20 + 8 + d.length, 0);
        assert.deepEqual([held.heldPackets, held.heldBytes, held.packets], [3, frames, undefined], 'counts only');
        await sleep(300);
        assert.equal(pair.total('server'), 0, 'nothing delivered while held');
        assert.equal((await b.step()).released, 3);
        await until('delivered', () => pair.total('server') === 22, WAIT_MS);
        assert.equal((await pair.dump()).server.toString(), sent.join(''));
      } finally {
        await b.release();
      }
      assert.equal(tcState(ns), before);
    } finally {
      pair.kill();
    }
  });
});

test('plug, --at ingress on a veth: SYNs from another namespace held on the IFB, released by a step; the clsact and IFB removed after', async () => {
  const client = createNetns();
  try {
    await withNetns(async (ns) => {
      // client ns: 10.9.0.1 on va  <->  vb: 10.9.0.2 in the buffer's namespace
      ns.exec('ip', ['link', 'add', 'vb', 'type', 'veth', 'peer', 'name', 'va', 'netns', client.name]);
      ns.exec('ip', ['addr', 'add', '10.9.0.2/24', 'dev', 'vb']);
      ns.exec('ip', ['link', 'set', 'vb', 'up']);
      client.exec('ip', ['addr', 'add', '10.9.0.1/24', 'dev', 'va']);
      client.exec('ip', ['link', 'set', 'va', 'up']);
      const server = await startEchoServer(ns.name, '10.9.0.2', 16700);
      try {
        const state = () =>
          JSON.stringify([(ns.ipJson(['link', 'show']) as { ifname: string }[]).map((l) => l.ifname), ns.tcJson(['qdisc', 'show', 'dev', 'vb'])]);
        const before = state();
        const b = await buffer({ netns: ns.name, dev: 'vb', at: 'ingress', dport: 16700, backend: 'plug', maxHoldMs: 120_000 });
        try {
          const c = connectFrom(client, 16700, 0, WAIT_MS, '10.9.0.2');
          await until('the SYN held on the IFB (tc)', () => ifbQlen(ns) === 1, WAIT_MS);
          await sleep(300);
          assert.equal(await Promise.race([c.connected.then(() => 'connected'), sleep(0, 'held')]), 'held');
          // A remote sender retransmits a SYN it gets no answer to (after 1 s): in the slow lab, a copy may be held too.
          const step = await b.step();
          assert.ok(step.released >= 1, `the step released the held SYN(s): ${step.released}`);
          await c.connected;
          c.kill();
        } finally {
          await b.release();
        }
        assert.equal(state(), before, 'the IFB and the clsact on vb are gone');
      } finally {
        server.kill();
      }
    });
  } finally {
    client.delete();
  }
});

function ifbQlen(ns: TestNetns): number | undefined {
  return (ns.tcJson(['-s', 'qdisc', 'show', 'dev', 'synbuf7100']) as TcQdisc[]).find((x) => x.kind === 'plug')?.qlen;
}
