/**
 * `setup --steering while-holding` on this machine's kernel (nfqueue), each test in a fresh namespace.
 * The oracles are the kernel's own tools: `nft list` (nftables' decoder, not synhold's) for what is
 * installed, iptables-save for what is not, /proc/net/netfilter/nfnetlink_queue for what is held,
 * and real clients' connect times.
 *   - Between holds: no table, no iptables rule, nothing of synhold's in any packet's path.
 *   - During a hold: the tables match exactly the configured SYNs (nft prints the rules), a SYN to
 *     the port waits for the release, one to another port does not.
 *   - After the release: the tables are gone; teardown leaves the ruleset as it found it.
 *   - A table of that name made by someone else: setup refuses with one line and changes nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nstat, withNetns, type TestNetns } from '../helpers/netns.js';
import { synhold, synholdAsync } from '../helpers/cli.js';
import { NfQueue } from '../../src/nfqueue/nfnetlink_queue.js';
import { OTHERS_IDLE_WAIT_MS } from '../../src/backends/nfqueue.js';
import { startClient, startEchoServer } from '../helpers/tcp.js';
import { holdTables, otherQueueUser, queueBound, queueHeld, until } from '../helpers/faults.js';

const PORT = 18080;
const OTHER = 18081;

const ruleset = (ns: TestNetns) => ns.exec('nft', ['list', 'ruleset']);
const synRetrans = (ns: TestNetns) => nstat(ns, 'TcpExtTCPSynRetrans');
const iptablesRules = (ns: TestNetns) =>
  [ns.exec('iptables-save', []), ns.exec('ip6tables-save', [])]
    .join('\n')
    .split('\n')
    .filter((l) => l.startsWith('-A'));

function setup(ns: TestNetns, extra: string[] = []) {
  const r = synhold(['--netns', ns.name, 'setup', '--port', String(PORT), '--backend', 'nfqueue', '--steering', 'while-holding', ...extra]);
  assert.equal(r.status, 0, r.stderr);
}

test('steering while-holding: nothing installed between holds; during a hold the tables hold the port SYNs only; the release removes them', async (t) => {
  await withNetns(async (ns) => {
    const servers = [await startEchoServer(ns.name, '127.0.0.1', PORT), await startEchoServer(ns.name, '127.0.0.1', OTHER)];
    try {
      const before = ruleset(ns);
      setup(ns);
      assert.equal(ruleset(ns), before, 'setup installed nothing in nf_tables');
      assert.deepEqual(iptablesRules(ns), [], 'setup installed no iptables rule');
      const status = synhold(['--netns', ns.name, 'status']);
      assert.match(status.stdout, /steered only while holding/);

      const p = synhold(['--netns', ns.name, 'plug', '--max-hold', '10s']);
      assert.equal(p.status, 0, p.stderr);
      const during = ruleset(ns);
      t.diagnostic(during);
      assert.deepEqual(holdTables(ns), ['table ip synhold-q7001', 'table ip6 synhold-q7001']);
      // nft's rendering of synhold's expressions: SYN alone of fin,syn,rst,ack, the port, the queue with bypass.
      const rule = `tcp flags syn / fin,syn,rst,ack tcp dport ${PORT} counter packets 0 bytes 0 queue num 7001 bypass`;
      assert.equal(during.split(rule).length - 1, 2, 'one rule per family');
      assert.match(during, /flags owner/);
      assert.match(during, /type filter hook prerouting priority raw; policy accept;/);

      const retransBefore = synRetrans(ns);
      const held = startClient(ns.name, '127.0.0.1', PORT);
      await until('the SYN to be held', async () => (await queueHeld(ns)) >= 1);
      const other = await startClient(ns.name, '127.0.0.1', OTHER).result;
      assert.equal(other.error, null);
      assert.ok(other.connectMs! < 100, `another port is not held (${other.connectMs} ms)`);
      const releasedAt = Date.now();
      const r = synhold(['--netns', ns.name, 'release']);
      assert.equal(r.status, 0, r.stderr);
      const res = await held.result;
      assert.equal(res.error, null, JSON.stringify(res));
      t.diagnostic(`held client connected ${res.connectedAt! - releasedAt} ms after the release command started`);
      assert.ok(res.connectedAt! >= releasedAt, 'the held client connected only after the release');
      // The held SYN itself got through, not a retransmit: accept comes before the tables' delete (the
      // other way round the kernel drops what is queued, and the client connects with its 1 s retransmit).
      assert.equal(synRetrans(ns) - retransBefore, 0, 'no SYN retransmitted (nstat TcpExtTCPSynRetrans)');
      assert.ok(res.connectMs! < 1000, `connected in ${res.connectMs} ms, before any retransmit`);
      assert.deepEqual(holdTables(ns), [], 'the release removed the tables');
      assert.equal(ruleset(ns), before);

      const after = await startClient(ns.name, '127.0.0.1', PORT).result;
      assert.equal(after.error, null);
      assert.ok(after.connectMs! < 100, `not held after the release (${after.connectMs} ms)`);
      assert.equal(synhold(['--netns', ns.name, 'teardown']).status, 0);
      assert.equal(ruleset(ns), before, 'teardown left the ruleset as it found it');
    } finally {
      for (const s of servers) s.kill();
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});

/** Set up with `extra`, hold by hand, run `during` while held, release: the tables must then be gone. */
async function whileHeld(extra: string[], during: (ns: TestNetns) => void): Promise<void> {
  await withNetns(async (ns) => {
    try {
      setup(ns, extra);
      const p = synhold(['--netns', ns.name, 'plug', '--max-hold', '5s']);
      assert.equal(p.status, 0, p.stderr);
      during(ns);
      assert.equal(synhold(['--netns', ns.name, 'release']).status, 0);
      assert.deepEqual(holdTables(ns), []);
    } finally {
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
}

test('steering while-holding: addresses and sources become the same matches as the iptables rule (nft prints them)', async () => {
  await whileHeld(['--address', '127.0.0.0/8', '--address', '::1', '--source', '127.0.0.2', '--source', '::1'], (ns) => {
    const during = ruleset(ns);
    assert.match(during, new RegExp(`ip saddr 127\\.0\\.0\\.2 ip daddr 127\\.0\\.0\\.0/8 tcp flags syn / fin,syn,rst,ack tcp dport ${PORT} counter`));
    assert.match(during, new RegExp(`ip6 saddr ::1 ip6 daddr ::1 tcp flags syn / fin,syn,rst,ack tcp dport ${PORT} counter`));
  });
});

test('steering while-holding: an IPv4-only configuration makes no ip6 table', async () => {
  await whileHeld(['--address', '127.0.0.1'], (ns) => assert.deepEqual(holdTables(ns), ['table ip synhold-q7001']));
});

test('steering while-holding: a table of that name made by someone else: setup refuses in one line and changes nothing; a hold refuses and holds nothing', async () => {
  await withNetns(async (ns) => {
    try {
      ns.exec('nft', ['add', 'table', 'ip', 'synhold-q7001']);
      ns.exec('nft', ['add', 'chain', 'ip', 'synhold-q7001', 'mine']);
      const before = ruleset(ns);
      const r = synhold(['--netns', ns.name, 'setup', '--port', String(PORT), '--backend', 'nfqueue', '--steering', 'while-holding']);
      assert.equal(r.status, 1, r.stderr);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, /synhold-q7001.*in the way/);
      assert.equal(ruleset(ns), before, 'the other table is untouched');
      assert.equal(synhold(['--netns', ns.name, 'status']).status, 3, 'not set up');

      // Made after setup: the hold fails before CMD runs, and nothing stays held or bound.
      ns.exec('nft', ['delete', 'table', 'ip', 'synhold-q7001']);
      setup(ns);
      ns.exec('nft', ['add', 'table', 'ip', 'synhold-q7001']);
      const p = synhold(['--netns', ns.name, 'protect', '--', 'sh', '-c', 'echo ran']);
      assert.equal(p.status, 125, 'protect could not hold: CMD not run (timeout(1)-style 125)');
      assert.doesNotMatch(p.stdout, /ran/);
      assert.match(p.stderr, /in the way/);
      assert.equal(await queueBound(ns), false, 'the queue bound for the hold was unbound again');
      assert.deepEqual(holdTables(ns), ['table ip synhold-q7001'], 'only the other table: ours was never made (the transaction is all or nothing)');
      assert.equal(synhold(['--netns', ns.name, 'status']).status, 0, synhold(['--netns', ns.name, 'status']).stdout);
    } finally {
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});

test('steering auto (the default): while-holding where the kernel takes the hold table; setup and status say which and why', async () => {
  await withNetns(async (ns) => {
    try {
      const r = synhold(['--netns', ns.name, '--json', 'setup', '--port', String(PORT), '--backend', 'nfqueue']);
      assert.equal(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout) as { config: { steering: string }; steering: { installed: string; reason: string } };
      assert.equal(out.config.steering, 'auto');
      assert.equal(out.steering.installed, 'while-holding');
      assert.match(out.steering.reason, /this kernel takes the hold table/);
      assert.deepEqual(iptablesRules(ns), [], 'no iptables rule');
      assert.deepEqual(holdTables(ns), [], 'no table');
      assert.match(synhold(['--netns', ns.name, 'status']).stdout, /steered only while holding/);
      const st = JSON.parse(synhold(['--netns', ns.name, '--json', 'status']).stdout) as { steering: { installed: string } };
      assert.equal(st.steering.installed, 'while-holding');
    } finally {
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});

const ownedFlag = (ns: TestNetns) => ns.exec('nft', ['list', 'table', 'ip', 'synhold-q7001']).includes('flags owner');

test("steering while-holding beside another NFQUEUE user: the hold keeps its table (owned by no socket) so the other's held packets are never dropped; the first hold after the other is gone deletes it; teardown removes a kept one", async () => {
  await withNetns(async (ns) => {
    const servers = [await startEchoServer(ns.name, '127.0.0.1', PORT), await startEchoServer(ns.name, '127.0.0.1', OTHER)];
    const other = await otherQueueUser(ns, OTHER);
    try {
      const before = ruleset(ns);
      setup(ns);
      const retransBefore = synRetrans(ns);
      const client = startClient(ns.name, '127.0.0.1', OTHER);
      await until('the other user holding the SYN', async () => (await queueHeld(ns, 4242)) >= 1);
      const p = synhold(['--netns', ns.name, '--json', 'protect', '--', 'sleep', '0.05']);
      assert.equal(p.status, 0, p.stderr);
      assert.equal((JSON.parse(p.stdout) as { othersCut?: number }).othersCut, undefined);
      assert.equal(await queueHeld(ns, 4242), 1, "the other user's SYN is still held: nothing was deleted under it");
      assert.deepEqual(holdTables(ns), ['table ip synhold-q7001', 'table ip6 synhold-q7001'], 'the tables were kept');
      assert.equal(ownedFlag(ns), false, 'a kept table is owned by no socket (nft prints no "flags owner")');
      await other.q.acceptAll();
      const res = await client.result;
      assert.equal(res.error, null, JSON.stringify(res));
      assert.ok(res.connectMs! < 1000, `the other user's client connected with its first SYN (${res.connectMs} ms)`);
      assert.equal(synRetrans(ns) - retransBefore, 0, 'no SYN retransmitted (nstat TcpExtTCPSynRetrans)');

      // A second hold while the other is still bound uses the kept table and keeps it.
      const held = startClient(ns.name, '127.0.0.1', PORT);
      const p2 = synholdAsync(['--netns', ns.name, 'protect', '--', 'sleep', '0.3']);
      assert.equal((await p2.done).status, 0);
      assert.equal((await held.result).error, null);
      assert.deepEqual(holdTables(ns), ['table ip synhold-q7001', 'table ip6 synhold-q7001']);

      // The other user leaves: the next hold's release deletes the kept tables: no cost between holds again.
      await other.close();
      assert.equal(synhold(['--netns', ns.name, 'protect', '--', 'true']).status, 0);
      assert.deepEqual(holdTables(ns), [], 'deleted once synhold was alone again');

      // And teardown removes a kept table.
      await other.rebind();
      assert.equal(synhold(['--netns', ns.name, 'protect', '--', 'true']).status, 0);
      assert.equal(holdTables(ns).length, 2);
      assert.equal(synhold(['--netns', ns.name, 'teardown']).status, 0);
      assert.deepEqual(holdTables(ns), []);
      // (the other user's rule counts its packets)
      const counters = (r: string) => r.replace(/packets \d+ bytes \d+/g, 'packets N bytes N');
      assert.equal(counters(ruleset(ns)), counters(before), 'teardown left the ruleset as it found it');
    } finally {
      await other.close();
      for (const s of servers) s.kill();
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});

test('steering while-holding, a queue bound during a hold: the release waits, before deleting its table, until that queue holds nothing; past OTHERS_IDLE_WAIT_MS it deletes and says what went', async (t) => {
  await withNetns(async (ns) => {
    const servers = [await startEchoServer(ns.name, '127.0.0.1', PORT), await startEchoServer(ns.name, '127.0.0.1', OTHER)];
    ns.exec('iptables', ['-t', 'raw', '-A', 'PREROUTING', '-p', 'tcp', '--syn', '--dport', String(OTHER), '-j', 'NFQUEUE', '--queue-num', '4242']);
    let other: NfQueue | undefined;
    try {
      setup(ns);
      // protect's queue unbound while its tables are still there: the release is waiting.
      const waiting = async () => !(await queueBound(ns)) && holdTables(ns).length > 0;

      // 1. The other lets go while protect waits: nothing dropped.
      // CMD outlasts the set-up below (the other user binding, its client's SYN held) with room to spare.
      const p = synholdAsync(['--netns', ns.name, '--json', 'protect', '--', 'sleep', '1.5']);
      await until('protect holding', () => queueBound(ns));
      other = await NfQueue.bind({ queue: 4242, netns: ns.name });
      const client = startClient(ns.name, '127.0.0.1', OTHER);
      await until('the other user holding the SYN', async () => (await queueHeld(ns, 4242)) >= 1);
      await until("protect's release waiting for it", waiting).catch(async (e: Error) => {
        const o = await p.done;
        throw new Error(`${e.message}; protect: ${o.status} ${o.stdout} ${o.stderr}`);
      });
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(await waiting(), 'still waiting 200 ms later');
      // What the other user holds is still queued (a delete would have flushed it): it lets it go now.
      const { accepted } = await other.acceptAll();
      assert.ok(accepted >= 1, `the other user still held its packets (${accepted})`);
      const out = await p.done;
      assert.equal(out.status, 0, out.stderr);
      const r = JSON.parse(out.stdout) as { othersCut?: number; othersWaitMs?: number; holdMs: number };
      t.diagnostic(`hold ${r.holdMs} ms, of which waiting for the other user ${r.othersWaitMs} ms`);
      assert.equal(r.othersCut, undefined, out.stdout);
      assert.ok(r.othersWaitMs! >= 200 && r.othersWaitMs! < OTHERS_IDLE_WAIT_MS, out.stdout);
      const res = await client.result;
      assert.equal(res.error, null, JSON.stringify(res));
      // Held by the other user until it let go (its 1 s retransmit held with it), not dropped: a
      // dropped SYN would have connected only with the retransmit at 3 s.
      assert.ok(res.connectMs! < 2900, `the other user's client connected when it let go (${res.connectMs} ms)`);
      assert.deepEqual(holdTables(ns), [], 'the tables went after the wait');
      await other.unbind();
      other.close();

      // 2. The other holds on past the wait: the tables go anyway, and protect says what went with them.
      const p2 = synholdAsync(['--netns', ns.name, '--json', 'protect', '--', 'sleep', '1.5']);
      await until('protect holding', () => queueBound(ns));
      other = await NfQueue.bind({ queue: 4242, netns: ns.name });
      const client2 = startClient(ns.name, '127.0.0.1', OTHER);
      await until('the other user holding the next SYN', async () => (await queueHeld(ns, 4242)) >= 1);
      const out2 = await p2.done;
      assert.equal(out2.status, 0, out2.stderr);
      const r2 = JSON.parse(out2.stdout) as { othersCut?: number; othersWaitMs?: number };
      // the SYN, and its 1 s retransmit if it came during the wait
      assert.ok(r2.othersCut! >= 1, out2.stdout);
      assert.ok(r2.othersWaitMs! >= OTHERS_IDLE_WAIT_MS, out2.stdout);
      assert.match(out2.stderr, /^synhold: warning: \d+ packets other NFQUEUE users held were dropped when the hold's table went/m);
      assert.deepEqual(holdTables(ns), []);
      // The dropped client gets in with its retransmit, which the other user lets through.
      await until('the retransmitted SYN, held by the other user', async () => (await queueHeld(ns, 4242)) >= 1, 5000);
      await other.acceptAll();
      const res2 = await client2.result;
      assert.equal(res2.error, null, JSON.stringify(res2));
      // Its SYN was held before the wait began, so the copies dropped at its end are at least 1 s old:
      // the client got in with a later retransmit (this kernel retransmits every second).
      assert.ok(res2.connectMs! >= OTHERS_IDLE_WAIT_MS, `connected with a retransmit after the drop (${res2.connectMs} ms)`);
    } finally {
      if (other) {
        await other.unbind().catch(() => undefined);
        other.close();
      }
      for (const s of servers) s.kill();
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});
