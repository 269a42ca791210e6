/**
 * sch_plug on a real kernel that has it. These tests run INSIDE the kernel lab
 * (User-Mode Linux; see test/lab/guest-suite.test.ts, which boots it); each
 * uses a fresh network namespace there and checks the kernel with tc -j.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { createNetns, withNetns, type TestNetns } from '../helpers/netns.js';
import { startClient, startEchoServer } from '../helpers/tcp.js';
import { Rtnl } from '../../src/rtnl/rtnl.js';
import { Plug } from '../../src/plug/plug.js';
import { TC_H_ROOT, makeHandle } from '../../src/rtnl/tc/handle.js';
import { normalizeConfig } from '../../src/model/config.js';
import { setup, teardown } from '../../src/protect/setup.js';
import { StateStore } from '../../src/protect/state.js';
import { plugBackend, type PlugState } from '../../src/backends/plug.js';
import { holdDirect } from '../helpers/plug-hold.js';
import { HoldSession } from '../../src/protect/hold/session.js';
import { synhold, synholdAsync } from '../helpers/cli.js';
import { status } from '../helpers/lab-faults.js';

interface TcQdisc {
  kind: string;
  handle: string;
  parent?: string;
  root?: boolean;
  qlen?: number;
  backlog?: number;
  drops?: number;
  packets?: number;
}

function qdiscs(ns: TestNetns, dev = 'lo'): TcQdisc[] {
  return ns.tcJson(['-s', 'qdisc', 'show', 'dev', dev]) as TcQdisc[];
}

function plugOf(ns: TestNetns, dev = 'lo'): TcQdisc | undefined {
  return qdiscs(ns, dev).find((q) => q.kind === 'plug');
}

/** A device's qdiscs as `kind handle`: what a before/after comparison needs. */
function qdiscNames(ns: TestNetns, dev = 'lo'): string[] {
  return qdiscs(ns, dev).map((q) => `${q.kind} ${q.handle}`);
}

/** The IFB device synhold's setup made in the namespace (undefined: none). */
function ifbOf(ns: TestNetns): string | undefined {
  return (ns.ipJson(['link', 'show']) as { ifname: string }[]).map((l) => l.ifname).find((n) => n.startsWith('synhold-ifb'));
}

/** The u32 filters on lo's egress hook that redirect to `ifb` (synhold's, as tc lists them). */
function redirectsTo(ns: TestNetns, ifb: string): unknown[] {
  return (ns.tcJson(['filter', 'show', 'dev', 'lo', 'egress']) as { kind: string; options?: { actions?: { kind: string; to_dev?: string }[] } }[]).filter(
    (x) => x.kind === 'u32' && x.options?.actions?.some((a) => a.kind === 'mirred' && a.to_dev === ifb),
  );
}

// 60 s: generous on purpose. Every hold here is the test's own (released when the test says), so
// these waits only measure the lab's speed (a client start is ~1 s in CI's lab), never a race.
async function until(what: string, fn: () => boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Sends `count` UDP datagrams of `size` bytes to 127.0.0.1:port from inside the namespace. */
/** An established connection pinging through a hold was never delayed by it (no ping over 500 ms). */
async function assertNotDelayed(established: ReturnType<typeof startClient>): Promise<void> {
  const est = await established.result;
  assert.equal(est.error, null);
  assert.ok(Math.max(...est.pingMs) < 500, `established connection was delayed: max ping ${Math.max(...est.pingMs)} ms`);
}

/** Tears synhold down and asserts lo's qdiscs are those from before setup. */
async function teardownRestores(ns: TestNetns, before: TcQdisc[]): Promise<void> {
  await teardown({ netns: ns.name });
  assert.deepEqual(
    qdiscs(ns).map((x) => [x.kind, x.handle]),
    before.map((x) => [x.kind, x.handle]),
    'teardown restored lo',
  );
}

function sendUdp(ns: TestNetns, port: number, count: number, size = 40): void {
  const js =
    `const s=require('dgram').createSocket('udp4');let n=0;const b=Buffer.alloc(${size});` +
    `const go=()=>{if(n++>=${count})return s.close();s.send(b,${port},'127.0.0.1',go)};go();`;
  const r = spawnSync('ip', ['netns', 'exec', ns.name, process.execPath, '-e', js]);
  assert.equal(r.status, 0, r.stderr?.toString());
}

/** A UDP socket that swallows datagrams, so released packets do not come back as ICMP port-unreachable (which the plug would hold too). */
function startUdpSink(ns: TestNetns, port: number): { kill(): void; ready: Promise<unknown> } {
  const js = `const s=require('dgram').createSocket('udp4');s.bind(${port},'127.0.0.1',()=>console.log('ready'));setTimeout(()=>process.exit(0),60000)`;
  const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', js], { stdio: ['ignore', 'pipe', 'inherit'] });
  return { kill: () => child.kill('SIGKILL'), ready: once(child.stdout!, 'data') };
}

test('the lab kernel has sch_plug (tc, not synhold, says so)', () => {
  const ns = createNetns();
  try {
    const r = spawnSync('tc', ['-n', ns.name, 'qdisc', 'add', 'dev', 'lo', 'root', 'plug']);
    assert.equal(r.status, 0, `tc qdisc add ... plug failed: ${r.stderr}`);
  } finally {
    ns.delete();
  }
});

test('plug control: attach releases at once, buffer/release_one/release_indefinite epochs, limit drops, stats match tc', async () => {
  await withNetns(async (ns) => {
    const rt = Rtnl.open({ netns: ns.name });
    try {
      const sink = startUdpSink(ns, 9);
      await sink.ready;
      const plug = new Plug(rt, { dev: 'lo', parent: TC_H_ROOT, handle: makeHandle(1, 0) });
      assert.equal(await plug.attach(1_000_000), true);
      assert.equal(await plug.attach(1_000_000), false, 'a second attach finds the plug and leaves it');
      // A new plug starts plugged; attach must have released it: traffic flows.
      sendUdp(ns, 9, 3);
      assert.equal(plugOf(ns)!.qlen, 0);
      assert.ok(plugOf(ns)!.packets! >= 3, 'packets went through');

      await plug.buffer();
      sendUdp(ns, 9, 3); // epoch 1
      assert.equal(plugOf(ns)!.qlen, 3, 'three datagrams held');
      assert.equal((await plug.stats()).heldPackets, 3, 'our decoder agrees with tc');
      await plug.buffer();
      sendUdp(ns, 9, 2); // epoch 2
      assert.equal(plugOf(ns)!.qlen, 5);
      await plug.releaseOne(); // lets epoch 1 go, keeps epoch 2
      await until('epoch 1 to drain', () => plugOf(ns)!.qlen === 2);
      await plug.releaseIndefinite();
      await until('everything to drain', () => plugOf(ns)!.qlen === 0);
      const s = await plug.stats();
      assert.equal(s.heldPackets, 0);

      // Past the byte limit, packets are dropped (and counted).
      await plug.setLimit(200);
      await plug.buffer();
      sendUdp(ns, 9, 6, 40); // 6 x (40 + 28 + 14) bytes > 200
      const q = plugOf(ns)!;
      assert.ok(q.drops! >= 3, `drops ${q.drops}`);
      assert.equal((await plug.stats()).drops, q.drops);
      await plug.releaseIndefinite();
      await plug.delete();
      assert.equal(plugOf(ns), undefined, 'deleted');
      sink.kill();
    } finally {
      rt.close();
    }
  });
});

test("setup --egress-topology prio (the seed's) steers only new connections to the port into the plug; held connect completes after release with no RST", async () => {
  await withNetns(async (ns) => {
    const before = qdiscs(ns);
    const server = await startEchoServer(ns.name, '127.0.0.1', 16000);
    const other = await startEchoServer(ns.name, '127.0.0.1', 16001);
    // An established connection to the protected port, pinging every 50 ms throughout.
    const established = startClient(ns.name, '127.0.0.1', 16000, 40, 50);
    await established.connected;
    try {
      const r = await setup(normalizeConfig({ ports: [16000], backend: 'plug', egressTopology: 'prio' }), { netns: ns.name });
      assert.equal(r.backend, 'plug');
      // Oracle: tc sees the seed's topology.
      const q = qdiscs(ns);
      assert.ok(
        q.some((x) => x.kind === 'prio' && x.handle === '5301:' && x.root),
        JSON.stringify(q),
      );
      assert.ok(
        q.some((x) => x.kind === 'plug' && x.handle === '5302:' && x.parent === '5301:4'),
        JSON.stringify(q),
      );
      const filters = ns.tcJson(['filter', 'show', 'dev', 'lo', 'parent', '5301:']) as { kind: string; options?: { flowid?: string } }[];
      assert.ok(
        filters.some((f) => f.kind === 'u32' && f.options?.flowid === '5301:4'),
        JSON.stringify(filters),
      );

      const state = StateStore.for(ns.name).readSetup()!.backendState as PlugState;
      const rt = Rtnl.open({ netns: ns.name });
      try {
        const hold = await holdDirect(state, { rt, netns: ns.name });
        const held = startClient(ns.name, '127.0.0.1', 16000);
        await until('the SYN to be held in the plug', () => (plugOf(ns)?.qlen ?? 0) >= 1);
        const heldSince = Date.now();
        // Another port is not held.
        const free = await startClient(ns.name, '127.0.0.1', 16001).result;
        assert.equal(free.error, null);
        assert.ok(free.connectMs! < 500, `port 16001 connect took ${free.connectMs} ms while 16000 was held`);
        await sleep(Math.max(0, 1100 - (Date.now() - heldSince)));
        assert.equal(plugOf(ns)!.qlen, 1, 'still held after 1 s: exactly one SYN (no retransmit while it is queued locally)');
        const rel = await hold.release();
        assert.equal(rel.released, 1);
        const res = await held.result;
        assert.equal(res.error, null, 'no RST, no error');
        assert.ok(res.connectMs! >= 1000, `connect took ${res.connectMs} ms: it waited for the release`);
        assert.ok(res.connectMs! < 1000 + 2000, `connect took ${res.connectMs} ms`);
        await assertNotDelayed(established);
      } finally {
        rt.close();
      }
      await teardownRestores(ns, before);
    } finally {
      established.kill();
      server.kill();
      other.kill();
    }
  });
});

test('egress --egress-topology clsact --steering always: lo keeps its root, only new connections to the port go to a plug on an IFB; released without RST', async (t) => {
  await withNetns(async (ns) => {
    const links = () => (ns.ipJson(['link', 'show']) as { ifname: string }[]).map((l) => l.ifname);
    const before = { q: qdiscs(ns), links: links() };
    const server = await startEchoServer(ns.name, '127.0.0.1', 16000);
    const other = await startEchoServer(ns.name, '127.0.0.1', 16001);
    const established = startClient(ns.name, '127.0.0.1', 16000, 40, 50);
    await established.connected;
    try {
      const r = await setup(normalizeConfig({ ports: [16000], backend: 'plug', egressTopology: 'clsact', steering: 'always' }), { netns: ns.name });
      assert.equal(r.backend, 'plug');
      // Oracle: tc sees lo's root as before (no prio, no plug on lo), a clsact hook, and the plug on the IFB.
      const q = qdiscs(ns);
      assert.deepEqual(
        q.filter((x) => x.root).map((x) => x.kind),
        before.q.filter((x) => x.root).map((x) => x.kind),
        `lo's root is untouched: ${JSON.stringify(q)}`,
      );
      assert.ok(!q.some((x) => x.kind === 'prio' || x.kind === 'plug'), JSON.stringify(q));
      assert.ok(
        q.some((x) => x.kind === 'clsact'),
        JSON.stringify(q),
      );
      const ifb = links().find((n) => n.startsWith('synhold-ifb'));
      assert.ok(ifb, 'an IFB device was created');
      assert.ok(plugOf(ns, ifb), "the plug is the IFB device's root");
      const f = ns.tcJson(['filter', 'show', 'dev', 'lo', 'egress']) as { kind: string; options?: { actions?: { kind: string; to_dev?: string }[] } }[];
      assert.ok(
        f.some((x) => x.kind === 'u32' && x.options?.actions?.some((a) => a.kind === 'mirred' && a.to_dev === ifb)),
        JSON.stringify(f),
      );
      assert.equal((ns.tcJson(['filter', 'show', 'dev', 'lo', 'ingress']) as unknown[]).length, 0, 'nothing on the ingress hook');
      // Unheld: the redirect through the IFB delivers at once.
      const quick = await startClient(ns.name, '127.0.0.1', 16000).result;
      assert.equal(quick.error, null);
      assert.ok(quick.connectMs! < 500, `unheld connect took ${quick.connectMs} ms`);

      const state = StateStore.for(ns.name).readSetup()!.backendState as PlugState;
      assert.equal(state.topology, 'clsact');
      const rt = Rtnl.open({ netns: ns.name });
      try {
        const hold = await holdDirect(state, { rt, netns: ns.name });
        const held = startClient(ns.name, '127.0.0.1', 16000);
        await until('the SYN to be held on the IFB', () => (plugOf(ns, ifb)?.qlen ?? 0) >= 1);
        const free = await startClient(ns.name, '127.0.0.1', 16001).result;
        assert.equal(free.error, null);
        assert.ok(free.connectMs! < 500, `port 16001 connect took ${free.connectMs} ms while 16000 was held`);
        await sleep(1100);
        // Still held after 1 s. Unlike the prio topology, the client has sent its SYN again by now
        // (and again at each retransmit timeout while held): mirred copies what it redirects, so TCP
        // no longer sees the SYN queued in the host. Every copy is held, and released together.
        const queued = plugOf(ns, ifb)!.qlen ?? 0;
        t.diagnostic(`SYNs in the plug after 1.1 s: ${queued}`);
        assert.ok(queued >= 1, `${queued} SYNs held`);
        const releaseAt = Date.now();
        const rel = await hold.release();
        assert.ok(rel.released >= queued, `released ${rel.released}, ${queued} were held before`);
        const res = await held.result;
        assert.equal(res.error, null, 'no RST, no error');
        assert.ok(res.connectedAt! >= releaseAt, `connected ${releaseAt - res.connectedAt!} ms before the release began`);
        await assertNotDelayed(established);
      } finally {
        rt.close();
      }
      await teardownRestores(ns, before.q);
      assert.deepEqual(links(), before.links, 'teardown removed the IFB device');
    } finally {
      established.kill();
      server.kill();
      other.kill();
    }
  });
});

test("egress, the default (auto: clsact, steering while holding): between holds lo has bare's qdiscs; each hold adds the hook and its filters, its release deletes them; a dead hold's leftovers are replaced", async () => {
  await withNetns(async (ns) => {
    const before = qdiscs(ns);
    const server = await startEchoServer(ns.name, '127.0.0.1', 16000);
    try {
      const r = await setup(normalizeConfig({ ports: [16000], backend: 'plug' }), { netns: ns.name });
      const state = StateStore.for(ns.name).readSetup()!.backendState as PlugState;
      assert.equal(state.topology, 'clsact', 'auto built the clsact redirect');
      assert.match(state.topologyReason ?? '', /root qdisc untouched/);
      assert.equal(state.steering, 'while-holding');
      assert.match(state.steeringReason ?? '', /only while holding/);
      assert.equal(r.backend, 'plug');
      const ifb = ifbOf(ns)!;
      const redirects = () => redirectsTo(ns, ifb);
      const loQdiscs = () => qdiscNames(ns);
      const bare = before.map((q) => `${q.kind} ${q.handle}`);
      // Somebody's filter at priority 7 on lo's ingress side (tc lists a u32 filter with its hash table: 1 or more entries).
      const theirs = () =>
        (ns.tcJson(['filter', 'show', 'dev', 'lo', 'ingress']) as { pref?: number; kind?: string }[]).some((x) => x.pref === 7 && x.kind === 'u32');
      assert.deepEqual(loQdiscs(), bare, "between holds lo's qdiscs are bare's: no clsact hook");
      assert.deepEqual(redirects(), [], 'no filter between holds');
      // Unheld, nothing redirected: the IFB's plug sees no more packets than setup left (its proof of
      // the filters may have caught a SYN of the echo server's readiness check).
      const ifbPackets = () => plugOf(ns, ifb)?.packets ?? 0;
      const atSetup = ifbPackets();
      const quick = await startClient(ns.name, '127.0.0.1', 16000).result;
      assert.equal(quick.error, null);
      assert.equal(ifbPackets(), atSetup, 'no SYN went through the IFB between holds');

      const rt = Rtnl.open({ netns: ns.name });
      try {
        for (const round of ['first', 'second'] as const) {
          const hold = await holdDirect(state, { rt, netns: ns.name });
          assert.ok(
            loQdiscs().some((q) => q.startsWith('clsact')),
            `${round} hold: the hook`,
          );
          assert.equal(redirects().length, 2, `${round} hold: one filter per family`);
          const held = startClient(ns.name, '127.0.0.1', 16000);
          await until('the SYN to be held on the IFB', () => (plugOf(ns, ifb)?.qlen ?? 0) >= 1);
          const releaseAt = Date.now();
          await hold.release();
          const res = await held.result;
          assert.equal(res.error, null, 'no RST, no error');
          assert.ok(res.connectedAt! >= releaseAt, `connected ${releaseAt - res.connectedAt!} ms before the release began`);
          assert.deepEqual(redirects(), [], `${round} hold: the filters went with the release`);
          assert.deepEqual(loQdiscs(), bare, `${round} hold: and the hook`);
        }
        // A hold whose owner died: the watchdog's release (its prepared message: the plug's
        // release_indefinite, nothing else) lets the plug go, the filters stay (cost, not harm: they
        // redirect through the released plug). The next hold starts from the hook as setup left it.
        const watchdogsRelease = () => new Plug(rt, { dev: state.plug.dev, parent: state.plug.parent, handle: state.plug.handle }).releaseIndefinite();
        const prepared = await plugBackend.prepare(state, { rt, netns: ns.name });
        await prepared.start();
        prepared.close();
        await watchdogsRelease();
        assert.equal(redirects().length, 2, 'left by the dead hold');
        const after = await startClient(ns.name, '127.0.0.1', 16000).result;
        assert.equal(after.error, null, 'the leftovers pass SYNs through the released plug');
        const next = await holdDirect(state, { rt, netns: ns.name });
        assert.equal(redirects().length, 2, 'replaced, not doubled');
        await next.release();
        assert.deepEqual(redirects(), []);
        assert.deepEqual(loQdiscs(), bare);
        // `synhold release` (forceRelease) removes the leftovers with the plug's release; teardown too.
        const again = await plugBackend.prepare(state, { rt, netns: ns.name });
        await again.start();
        again.close();
        await watchdogsRelease();
        await plugBackend.forceRelease(state, { rt, netns: ns.name });
        assert.deepEqual(redirects(), [], 'forceRelease deleted them');
        assert.deepEqual(loQdiscs(), bare, 'and the hook');
        const third = await plugBackend.prepare(state, { rt, netns: ns.name });
        await third.start();
        third.close();
        await watchdogsRelease();
      } finally {
        rt.close();
      }
      // By hand: `synhold plug` leaves the hold to its watchdog; `synhold release` has the watchdog let
      // go of the plug and then removes the filters, under the hold lock.
      const plugged = synhold(['--netns', ns.name, 'plug', '--max-hold', '20s']);
      assert.equal(plugged.status, 0, plugged.stderr);
      assert.equal(redirects().length, 2, 'synhold plug: the filters');
      const released = synhold(['--netns', ns.name, 'release']);
      assert.equal(released.status, 0, released.stderr);
      assert.deepEqual(redirects(), [], 'synhold release: the filters gone');
      assert.deepEqual(loQdiscs(), bare, 'synhold release: and the hook');
      // Somebody hangs a filter of their own on the hook while a hold has it: the release deletes only
      // synhold's filters and leaves the hook (not synhold's alone any more) with theirs.
      const rt2 = Rtnl.open({ netns: ns.name });
      try {
        const hold = await holdDirect(state, { rt: rt2, netns: ns.name });
        ns.exec('tc', ['filter', 'add', 'dev', 'lo', 'ingress', 'prio', '7', 'protocol', 'ip', 'u32', 'match', 'u32', '0', '0', 'action', 'pass']);
        await hold.release();
        assert.deepEqual(redirects(), [], "synhold's filters gone");
        assert.ok(
          loQdiscs().some((q) => q.startsWith('clsact')),
          'the hook stays, with their filter',
        );
        assert.ok(theirs(), 'their filter stays');
        // Their filter gone, the hook is somebody's empty one: a hold that found it there (EEXIST) uses
        // it and leaves it, empty or not.
        ns.exec('tc', ['filter', 'del', 'dev', 'lo', 'ingress', 'prio', '7']);
        const onTheirs = await holdDirect(state, { rt: rt2, netns: ns.name });
        assert.equal(redirects().length, 2, 'a hold on their empty hook: its filters');
        await onTheirs.release();
        assert.deepEqual(redirects(), []);
        assert.ok(
          loQdiscs().some((q) => q.startsWith('clsact')),
          'the hook this hold did not make stays, empty',
        );
      } finally {
        rt2.close();
      }
      // Teardown: synhold's filters and IFB go; a hook with somebody's filter on it is theirs and stays.
      ns.exec('tc', ['filter', 'add', 'dev', 'lo', 'ingress', 'prio', '7', 'protocol', 'ip', 'u32', 'match', 'u32', '0', '0', 'action', 'pass']);
      await teardown({ netns: ns.name });
      assert.ok(
        loQdiscs().some((q) => q.startsWith('clsact')),
        'teardown left their hook',
      );
      assert.ok(theirs(), 'and their filter');
      assert.deepEqual(redirects(), []);
      ns.exec('tc', ['qdisc', 'del', 'dev', 'lo', 'clsact']);
      assert.deepEqual(loQdiscs(), bare, 'teardown restored lo (their hook removed by hand)');
    } finally {
      server.kill();
    }
  });
});

test('while holding, a hold its watchdog let go of (max-hold, synhold release) while its owner lives: the owner deletes the hook and filters under the hold lock', async () => {
  await withNetns(async (ns) => {
    const before = qdiscNames(ns);
    const server = await startEchoServer(ns.name, '127.0.0.1', 16000);
    try {
      await setup(normalizeConfig({ ports: [16000], backend: 'plug' }), { netns: ns.name });
      const ifb = ifbOf(ns)!;
      for (const end of ['max-hold', 'synhold release'] as const) {
        // A long max-hold, ended on cue once the SYN is held: the watchdog takes SIGUSR1 as its deadline
        // (what the daemon's reaper sends), so the lab's speed cannot end the hold before the client's SYN.
        const session = await HoldSession.start({ netns: ns.name, maxHoldMs: 60_000, lockWaitMs: 5000, via: 'protect' });
        assert.equal(redirectsTo(ns, ifb).length, 2, `${end}: the hold's filters`);
        const held = startClient(ns.name, '127.0.0.1', 16000);
        await until('the SYN to be held on the IFB', () => (plugOf(ns, ifb)?.qlen ?? 0) >= 1);
        // The CLI runs beside this process (the owner, whose event loop must go on to hear the watchdog):
        // its release signals the watchdog, then takes the lock once the owner's clean-up is done, or says the owner keeps it.
        const cli = end === 'synhold release' ? synholdAsync(['--netns', ns.name, 'release']).done : undefined;
        if (end === 'max-hold') process.kill(session.held.watchdogPid, 'SIGUSR1');
        const done = await session.done;
        assert.equal(done.by, 'watchdog', `${end}: the watchdog let go`);
        assert.equal(done.cause.kind, end === 'max-hold' ? 'max-hold' : 'manual', JSON.stringify(done));
        assert.equal(done.steeringLeft, undefined, `${end}: the owner's clean-up reported no failure`);
        if (cli) {
          const r = await cli;
          assert.equal(r.status, 0, r.stderr);
        }
        assert.equal((await held.result).error, null, `${end}: the held client connected, no RST`);
        // Oracle: tc. Before this, the two filters stayed until the next hold or teardown (a cost on every packet).
        assert.deepEqual(redirectsTo(ns, ifb), [], `${end}: the filters went`);
        assert.deepEqual(qdiscNames(ns), before, `${end}: and the hook the hold made: lo is bare again`);
        assert.equal(status(ns).hold, undefined, `${end}: no hold recorded`);
      }
      // The clean-up failing (injected in this process, the owner): the hold is over all the same, the
      // owner says what is left, and the next hold replaces the leftovers and removes them at its release.
      process.env.SYNHOLD_INJECT = 'steering-cleanup';
      try {
        const session = await HoldSession.start({ netns: ns.name, maxHoldMs: 60_000, lockWaitMs: 5000, via: 'protect' });
        process.kill(session.held.watchdogPid, 'SIGUSR1');
        const done = await session.done;
        assert.equal(done.by, 'watchdog');
        assert.match(done.steeringLeft ?? '', /injected fault at steering-cleanup/, JSON.stringify(done));
      } finally {
        delete process.env.SYNHOLD_INJECT;
      }
      assert.equal(redirectsTo(ns, ifb).length, 2, 'the clean-up failed: the filters are left');
      assert.equal(status(ns).hold, undefined, 'and no hold is recorded: the plug was let go');
      assert.equal((await startClient(ns.name, '127.0.0.1', 16000).result).error, null, 'SYNs pass the released plug');
      const next = await HoldSession.start({ netns: ns.name, maxHoldMs: 60_000, lockWaitMs: 5000, via: 'protect' });
      assert.equal(redirectsTo(ns, ifb).length, 2, 'the next hold: replaced, not doubled');
      await next.release({ kind: 'manual' });
      assert.deepEqual(redirectsTo(ns, ifb), []);
      assert.deepEqual(qdiscNames(ns), before, 'the next hold removed them, and the hook');
      await teardown({ netns: ns.name });
      assert.deepEqual(qdiscNames(ns), before);
    } finally {
      server.kill();
    }
  });
});

test("while holding, a hold's start that fails after its hook and filters are in: they go, and the plug lets go, by the start's own undo or (that failing too) by the watchdog", async () => {
  await withNetns(async (ns) => {
    const before = qdiscs(ns);
    const server = await startEchoServer(ns.name, '127.0.0.1', 16000);
    try {
      const set = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--backend', 'plug']);
      assert.equal(set.status, 0, set.stderr);
      const ifb = ifbOf(ns)!;
      const bare = before.map((q) => `${q.kind} ${q.handle}`);
      const loQdiscs = () => qdiscNames(ns);
      /**
       * Whether the IFB's plug lets a SYN through: the oracle is tc's, not synhold's. A redirect of our own
       * (tc, priority 9) sends one client's SYN to the IFB; a plug still buffering holds it (qlen 1).
       */
      const plugPasses = async (): Promise<boolean> => {
        ns.exec('tc', ['qdisc', 'add', 'dev', 'lo', 'clsact']);
        ns.exec('tc', [
          'filter',
          'add',
          'dev',
          'lo',
          'egress',
          'prio',
          '9',
          'protocol',
          'ip',
          'u32',
          'match',
          'ip',
          'dport',
          '16000',
          '0xffff',
          'action',
          'mirred',
          'egress',
          'redirect',
          'dev',
          ifb,
        ]);
        const c = startClient(ns.name, '127.0.0.1', 16000);
        const passed = await Promise.race([c.result.then((r) => r.error === null), sleep(3000).then(() => false)]);
        if (!passed) {
          assert.ok((plugOf(ns, ifb)?.qlen ?? 0) >= 1, 'a client that did not connect is held in the plug');
          synhold(['--netns', ns.name, 'release']);
          await c.result;
        }
        ns.exec('tc', ['qdisc', 'del', 'dev', 'lo', 'clsact']);
        return passed;
      };
      assert.ok(await plugPasses(), 'the plug passes between holds');
      for (const faults of ['steering-added', 'steering-added,start-release']) {
        const r = synhold(['--netns', ns.name, 'plug', '--max-hold', '30s'], { SYNHOLD_INJECT: faults });
        assert.notEqual(r.status, 0, `${faults}: the hold failed`);
        assert.match(r.stderr, /injected fault at steering-added/, faults);
        if (faults.includes('start-release')) assert.match(r.stderr, /releasing the plug after it failed too \(injected fault at start-release/);
        assert.equal(r.stderr.trim().split('\n').length, 1, `${faults}: one line: ${r.stderr}`);
        assert.deepEqual(loQdiscs(), bare, `${faults}: no hook left on lo`);
        assert.equal((ns.tcJson(['filter', 'show', 'dev', 'lo', 'egress']) as unknown[]).length, 0, `${faults}: no filter left`);
        assert.equal(status(ns).hold, undefined, `${faults}: no hold recorded`);
        assert.ok(await plugPasses(), `${faults}: the plug let go (start-release: by the watchdog's release)`);
      }
      await teardownRestores(ns, before);
    } finally {
      server.kill();
    }
  });
});

test('--egress-topology prio --steering while-holding with --backend auto: refused once plug is chosen, nothing changed', async () => {
  await withNetns(async (ns) => {
    const before = qdiscs(ns);
    const r = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--egress-topology', 'prio', '--steering', 'while-holding']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--steering while-holding needs the plug backend's redirect topology/);
    assert.deepEqual(qdiscs(ns), before);
    assert.equal((ns.ipJson(['link', 'show']) as { ifname: string }[]).filter((l) => l.ifname.startsWith('synhold-ifb')).length, 0);
    const st = synhold(['--netns', ns.name, 'status']);
    assert.equal(st.status, 3, 'status: not set up');
    assert.match(st.stdout + st.stderr, /not set up/);
  });
});

test("egress --egress-topology clsact beside somebody's ingress qdisc: refused with the reason, nothing changed", async () => {
  await withNetns(async (ns) => {
    ns.exec('tc', ['qdisc', 'add', 'dev', 'lo', 'ingress']);
    const snap = () => JSON.stringify([qdiscs(ns), ns.ipJson(['link', 'show'])]);
    const before = snap();
    await assert.rejects(
      setup(normalizeConfig({ ports: [16000], backend: 'plug', egressTopology: 'clsact' }), { netns: ns.name }),
      /dev lo has an ingress qdisc, which has no egress hook/,
    );
    assert.equal(snap(), before);
    assert.equal(StateStore.for(ns.name).readSetup(), undefined);
  });
});

test("egress, the default beside somebody's ingress qdisc (no egress hook): auto builds the seed's prio root and says why; --steering while-holding is refused, nothing changed", async () => {
  await withNetns(async (ns) => {
    ns.exec('tc', ['qdisc', 'add', 'dev', 'lo', 'ingress']);
    const snap = () => JSON.stringify([ns.tcJson(['qdisc', 'show']), ns.ipJson(['link', 'show'])]);
    const before = snap();
    await assert.rejects(
      setup(normalizeConfig({ ports: [16000], backend: 'plug', steering: 'while-holding' }), { netns: ns.name }),
      /--steering while-holding needs the clsact redirect, and dev lo has an ingress qdisc, which has no egress hook/,
    );
    assert.equal(snap(), before, 'refused: nothing changed');
    assert.equal(StateStore.for(ns.name).readSetup(), undefined);

    const r = synhold(['--netns', ns.name, 'setup', '--port', '16000', '--backend', 'plug']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /topology prio \(auto: dev lo has an ingress qdisc, which has no egress hook/);
    const state = StateStore.for(ns.name).readSetup()!.backendState as PlugState;
    assert.equal(state.topology, 'prio');
    // Oracle: tc sees the seed's root, the plug in its fourth band, and the ingress qdisc untouched.
    const q = qdiscs(ns);
    assert.ok(
      q.some((x) => x.kind === 'prio' && x.handle === '5301:' && x.root),
      JSON.stringify(q),
    );
    assert.ok(
      q.some((x) => x.kind === 'plug' && x.parent === '5301:4'),
      JSON.stringify(q),
    );
    assert.ok(
      q.some((x) => x.kind === 'ingress'),
      JSON.stringify(q),
    );
    const st = synhold(['--netns', ns.name, 'status']);
    assert.match(st.stdout, /\(egress, prio root \(auto: dev lo has an ingress qdisc/);
    assert.equal(synhold(['--netns', ns.name, 'teardown']).status, 0);
    assert.equal(snap(), before, 'teardown: the ingress qdisc as it was, lo back to its default root');
  });
});

test('ingress: a client in another namespace is held at the server side via IFB, released without RST', async (t) => {
  const client = createNetns('synhold-c');
  const server = createNetns('synhold-s');
  try {
    spawnSync('ip', ['link', 'add', 'shc0', 'netns', client.name, 'type', 'veth', 'peer', 'name', 'shs0', 'netns', server.name]);
    client.exec('ip', ['addr', 'add', '10.77.0.1/24', 'dev', 'shc0']);
    server.exec('ip', ['addr', 'add', '10.77.0.2/24', 'dev', 'shs0']);
    client.exec('ip', ['link', 'set', 'shc0', 'up']);
    server.exec('ip', ['link', 'set', 'shs0', 'up']);
    const before = { q: qdiscs(server, 'shs0'), links: (server.ipJson(['link', 'show']) as { ifname: string }[]).map((l) => l.ifname) };
    const srv = await startEchoServer(server.name, '10.77.0.2', 16000);
    try {
      // The default steering on a redirect topology: the filters only while holding.
      await setup(normalizeConfig({ ports: [16000], dev: 'shs0', direction: 'ingress', backend: 'plug' }), { netns: server.name });
      const ifb = ifbOf(server);
      assert.ok(ifb, 'an IFB device was created');
      assert.deepEqual(
        qdiscs(server, 'shs0').map((q) => q.kind),
        before.q.map((q) => q.kind),
        'between holds: the device as before, no hook',
      );
      const redirects = () =>
        (server.tcJson(['filter', 'show', 'dev', 'shs0', 'ingress']) as { kind: string; options?: { actions?: { kind: string; to_dev?: string }[] } }[]).filter(
          (x) => x.options?.actions?.some((a) => a.kind === 'mirred' && a.to_dev === ifb),
        );
      assert.deepEqual(redirects(), [], 'no filter between holds');

      // Unheld: connects at once.
      const quick = await startClient(client.name, '10.77.0.2', 16000).result;
      assert.equal(quick.error, null);

      const state = StateStore.for(server.name).readSetup()!.backendState as PlugState;
      const rt = Rtnl.open({ netns: server.name });
      try {
        const hold = await holdDirect(state, { rt, netns: server.name });
        assert.ok(
          qdiscs(server, 'shs0').some((q) => q.kind === 'clsact'),
          'the hook while holding',
        );
        assert.ok(redirects().length >= 1, 'the redirect filters while holding');
        const c = startClient(client.name, '10.77.0.2', 16000);
        await until('the SYN to be held on the IFB', () => (plugOf(server, ifb)?.qlen ?? 0) >= 1);
        await sleep(1100);
        const releaseAt = Date.now();
        const rel = await hold.release();
        assert.ok(rel.released >= 1);
        assert.deepEqual(redirects(), [], 'the filters gone with the release');
        assert.deepEqual(
          qdiscs(server, 'shs0').map((q) => q.kind),
          before.q.map((q) => q.kind),
          'and the hook',
        );
        const res = await c.result;
        assert.equal(res.error, null);
        t.diagnostic(`held connect: ${res.connectMs} ms from the client's start; connected ${res.connectedAt! - releaseAt} ms after the release began`);
        // Connected only once released: the client's wall clock against the release's, in
        // the same kernel. (It was `connectMs >= 1000`, a duration from the client's own
        // start, which once read 748 ms in a loaded lab although the test had seen the SYN
        // in the plug and waited 1.1 s before releasing: a clock disagreement or a leak.
        // This fails on a leak, and says by how much.)
        assert.ok(res.connectedAt! >= releaseAt, `connected ${releaseAt - res.connectedAt!} ms before the release began`);
      } finally {
        rt.close();
      }
      await teardown({ netns: server.name });
      assert.deepEqual(
        qdiscs(server, 'shs0').map((q) => q.kind),
        before.q.map((q) => q.kind),
      );
      assert.deepEqual(
        (server.ipJson(['link', 'show']) as { ifname: string }[]).map((l) => l.ifname),
        before.links,
      );
    } finally {
      srv.kill();
    }
  } finally {
    client.delete();
    server.delete();
  }
});

test('auto picks plug on this kernel, with the reason', async () => {
  await withNetns(async (ns) => {
    const r = await setup(normalizeConfig({ ports: [16000] }), { netns: ns.name });
    assert.equal(r.backend, 'plug');
    assert.match(r.backendReason, /auto/);
    const state = r.record.backendState as PlugState;
    assert.equal(state.topology, 'clsact', 'and the clsact redirect: this kernel has IFB, clsact and act_mirred');
    assert.equal(state.steering, 'while-holding');
    await teardown({ netns: ns.name });
  });
});

test("the steady-state bench's stand-ins build synhold's plug topologies, a pfifo in the plug's place: tc's dumps are the same", async () => {
  const { standIn, STAND_IN_IFB } = await import('../../bench/src/cost/plug-stand-in.js');
  // tc's text, without what differs by construction: the IFB's name, filter handles' counters and times.
  const dump = (ns: TestNetns, args: string[]) =>
    ns
      .exec('tc', args)
      .replace(/synhold-ifb\w+/g, 'IFB')
      .split('\n')
      .filter((l) => !/installed|Sent|backlog|Action statistics|index \d+ ref/.test(l))
      .join('\n');
  // prio; clsact as `--steering always` leaves it; and the default (auto: clsact, steering while
  // holding) between holds, which leaves lo as bare and only the IFB and its plug.
  const cases = [
    { topology: 'prio', cfg: { egressTopology: 'prio' }, filtered: true },
    { topology: 'clsact', cfg: { egressTopology: 'clsact', steering: 'always' }, filtered: true },
    { topology: 'clsact-between-holds', cfg: {}, filtered: false },
  ] as const;
  for (const { topology, cfg, filtered } of cases) {
    await withNetns(async (ns) => {
      const filterArgs = topology === 'prio' ? ['filter', 'show', 'dev', 'lo'] : ['filter', 'show', 'dev', 'lo', 'egress'];
      await setup(normalizeConfig({ ports: [8001], backend: 'plug', ...cfg }), { netns: ns.name });
      const real = { filters: dump(ns, filterArgs), lo: qdiscNames(ns) };
      const ifb = topology !== 'prio' ? ifbOf(ns)! : undefined;
      const realIfb = ifb ? qdiscNames(ns, ifb) : [];
      await teardown({ netns: ns.name });
      // What is compared is there: synhold's SYN keys in the filters (none between holds), its plug where the stand-in puts a pfifo.
      if (filtered) assert.match(real.filters, /match 00020000\/00120000 at 32/);
      else assert.equal(real.filters.trim(), '', 'between holds: no filter on lo');
      assert.ok([...real.lo, ...realIfb].includes('plug 5302:'), JSON.stringify({ real, realIfb }));
      const s = standIn(topology, 'lo', 8001);
      for (const [cmd, ...args] of s.install) ns.exec(cmd!, args);
      try {
        assert.equal(dump(ns, filterArgs), real.filters, `${topology}: the filters`);
        // The qdiscs: the same, but a pfifo where the plug is.
        const plugAsPfifo = (xs: string[]) => xs.map((x) => x.replace(/^plug /, 'pfifo '));
        assert.deepEqual(qdiscNames(ns), plugAsPfifo(real.lo), `${topology}: lo's qdiscs`);
        if (ifb) assert.deepEqual(qdiscNames(ns, STAND_IN_IFB), plugAsPfifo(realIfb), 'the IFB');
      } finally {
        for (const [cmd, ...args] of s.remove) spawnSync('ip', ['netns', 'exec', ns.name, cmd!, ...args]);
      }
    });
  }
});
