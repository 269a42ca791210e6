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
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { synhold } from '../helpers/cli.js';
import { startClient, startEchoServer } from '../helpers/tcp.js';
import { holdTables, queueBound, queueHeld, until } from '../helpers/faults.js';

const PORT = 18080;
const OTHER = 18081;

const ruleset = (ns: TestNetns) => ns.exec('nft', ['list', 'ruleset']);
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

      const synRetrans = () => Number(/TcpExtTCPSynRetrans\s+(\d+)/.exec(ns.exec('nstat', ['-az', 'TcpExtTCPSynRetrans']))?.[1] ?? NaN);
      const retransBefore = synRetrans();
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
      assert.equal(synRetrans() - retransBefore, 0, 'no SYN retransmitted (nstat TcpExtTCPSynRetrans)');
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
