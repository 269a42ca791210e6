/**
 * src/netfilter/nf_tables.ts on the real kernel, each test in a fresh network
 * namespace: the table iptables-nft leaves behind is deleted only when it holds
 * nothing, and only if nothing changed since it was read (the generation id).
 * Oracles: `nft list ruleset` / `nft -j` and `iptables-nft-save`, run with
 * `ip netns exec`.
 *
 * Run: cd /work/main && npx tsc -p . && node --test dist/test/kernel/nf_tables.test.js
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { Iptables } from '../../src/netfilter/iptables.js';
import { NF_ACCEPT, NFPROTO_IPV4, NFPROTO_IPV6 } from '../../src/netfilter/nfnetlink.js';
import { deleteTable, deleteTableIfEmpty, getGeneration, inspectTable, isEmptyTable, type NftFamily } from '../../src/netfilter/nf_tables.js';
import { NetlinkError } from '../../src/netlink/errors.js';
import { NETLINK_NETFILTER, NetlinkSocket } from '../../src/netlink/socket.js';

const hasNft = spawnSync('nft', ['--version']).status === 0;
const NFT = hasNft && spawnSync('unshare', ['--net', 'iptables-nft', '-w', '5', '-t', 'raw', '-A', 'PREROUTING', '-p', 'udp', '-j', 'ACCEPT']).status === 0;
if (!NFT) console.error('nf_tables.test: needs nft (the oracle) and a working iptables-nft: SKIPPED (apt-get install nftables iptables)');

/** What iptables-nft leaves after its last rule goes: the raw table with an empty PREROUTING base chain. */
function leaveEmptyRaw(ns: TestNetns, family: 4 | 6 = 4): void {
  const bin = family === 6 ? 'ip6tables-nft' : 'iptables-nft';
  ns.exec(bin, ['-w', '5', '-t', 'raw', '-A', 'PREROUTING', '-p', 'udp', '-j', 'ACCEPT']);
  ns.exec(bin, ['-w', '5', '-t', 'raw', '-D', 'PREROUTING', '-p', 'udp', '-j', 'ACCEPT']);
}

async function withSocket<T>(ns: TestNetns, fn: (sock: NetlinkSocket) => Promise<T>): Promise<T> {
  const sock = NetlinkSocket.open(NETLINK_NETFILTER, { netns: ns.name });
  try {
    return await fn(sock);
  } finally {
    sock.close();
  }
}

interface Occupant {
  what: string;
  family: 4 | 6;
  add: [string, string[]];
  /** Undoes `add`, after which the table is empty again (none: cannot be undone to empty). */
  undo?: [string, string[]];
}

const occupants: Occupant[] = [
  {
    what: "someone else's iptables rule",
    family: 4,
    add: ['iptables-nft', ['-t', 'raw', '-A', 'OUTPUT', '-p', 'udp', '-j', 'ACCEPT']],
    undo: ['iptables-nft', ['-t', 'raw', '-F', 'OUTPUT']],
  },
  {
    what: 'an nft rule',
    family: 4,
    add: ['nft', ['add', 'rule', 'ip', 'raw', 'PREROUTING', 'counter']],
    undo: ['nft', ['flush', 'chain', 'ip', 'raw', 'PREROUTING']],
  },
  { what: 'a user chain', family: 4, add: ['iptables-nft', ['-t', 'raw', '-N', 'someone']], undo: ['iptables-nft', ['-t', 'raw', '-X', 'someone']] },
  { what: 'a set', family: 4, add: ['nft', ['add', 'set', 'ip', 'raw', 's', '{ type ipv4_addr; }']], undo: ['nft', ['delete', 'set', 'ip', 'raw', 's']] },
  {
    what: 'a named counter (a stateful object)',
    family: 4,
    add: ['nft', ['add', 'counter', 'ip', 'raw', 'c']],
    undo: ['nft', ['delete', 'counter', 'ip', 'raw', 'c']],
  },
  {
    what: 'a base chain with policy drop',
    family: 4,
    add: ['iptables-nft', ['-t', 'raw', '-P', 'OUTPUT', 'DROP']],
    undo: ['iptables-nft', ['-t', 'raw', '-P', 'OUTPUT', 'ACCEPT']],
  },
  { what: 'a dormant table', family: 4, add: ['nft', ['add', 'table', 'ip', 'raw', '{ flags dormant; }']] },
  {
    what: 'a set (IPv6)',
    family: 6,
    add: ['nft', ['add', 'set', 'ip6', 'raw', 's', '{ type ipv6_addr; }']],
    undo: ['nft', ['delete', 'set', 'ip6', 'raw', 's']],
  },
  { what: 'a user chain (IPv6)', family: 6, add: ['ip6tables-nft', ['-t', 'raw', '-N', 'someone']], undo: ['ip6tables-nft', ['-t', 'raw', '-X', 'someone']] },
];

for (const o of occupants) {
  test(`tidyTable: a raw table holding ${o.what} stays exactly as it is${o.undo ? '; once that goes, the table goes' : ''}`, { skip: !NFT }, async () => {
    await withNetns(async (ns) => {
      const empty = ns.exec('nft', ['list', 'ruleset']);
      leaveEmptyRaw(ns, o.family);
      ns.exec(o.add[0], o.add[1]);
      const save = o.family === 6 ? 'ip6tables-nft-save' : 'iptables-nft-save';
      const before = { nft: ns.exec('nft', ['list', 'ruleset']), save: ns.exec(save, []).replace(/^#.*\n/gm, '') };
      const ipt = new Iptables({ backend: 'nft', family: o.family, netns: ns.name });
      assert.equal(await ipt.tidyTable('raw'), false);
      assert.deepEqual({ nft: ns.exec('nft', ['list', 'ruleset']), save: ns.exec(save, []).replace(/^#.*\n/gm, '') }, before);
      if (!o.undo) return;
      ns.exec(o.undo[0], o.undo[1]);
      assert.equal(await ipt.tidyTable('raw'), true);
      assert.equal(ns.exec('nft', ['list', 'ruleset']), empty);
    });
  });
}

test('inspectTable reads what nft reads: the chains with hook, priority and policy, the rules, the use count', { skip: !NFT }, async () => {
  await withNetns(async (ns) => {
    leaveEmptyRaw(ns);
    ns.exec('iptables-nft', ['-t', 'raw', '-A', 'OUTPUT', '-p', 'udp', '-j', 'ACCEPT']);
    ns.exec('iptables-nft', ['-t', 'raw', '-A', 'OUTPUT', '-p', 'tcp', '-j', 'ACCEPT']);
    ns.exec('nft', ['add', 'table', 'ip', 'other']);
    ns.exec('nft', ['add', 'chain', 'ip', 'other', 'PREROUTING']);
    const oracle = (JSON.parse(ns.exec('nft', ['-j', 'list', 'table', 'ip', 'raw'])) as { nftables: Record<string, Record<string, unknown>>[] }).nftables;
    const nftChains = oracle.filter((i) => i.chain).map((i) => i.chain!);
    const nftRules = oracle.filter((i) => i.rule).map((i) => i.rule!);
    const s = await withSocket(ns, (sock) => inspectTable(sock, NFPROTO_IPV4, 'raw'));
    assert.ok(s);
    assert.equal(s.table.name, 'raw');
    assert.equal(s.table.use, nftChains.length, 'the use count: two base chains, nothing else');
    assert.deepEqual(
      s.chains.map((c) => ({ name: c.name, hook: c.hook?.hooknum, prio: c.hook?.priority, policy: c.policy })).sort((a, b) => a.name.localeCompare(b.name)),
      nftChains
        .map((c) => ({ name: c.name, hook: { prerouting: 0, output: 3 }[c.hook as string], prio: c.prio, policy: c.policy === 'accept' ? NF_ACCEPT : 0 }))
        .sort((a, b) => String(a.name).localeCompare(String(b.name))),
      'not the chain of table ip other, although the kernel dumps it too',
    );
    assert.deepEqual(
      s.rules,
      nftRules.map((r) => ({ table: r.table, chain: r.chain })),
    );
    assert.equal(isEmptyTable(s), false);
    assert.equal(await withSocket(ns, (sock) => inspectTable(sock, NFPROTO_IPV6, 'raw')), undefined, 'no ip6 raw table');
  });
});

test(
  'the generation guard: a delete carrying a stale generation id is refused whole (ERESTART) and the rule added meanwhile survives',
  { skip: !NFT },
  async (t) => {
    await withNetns(async (ns) => {
      leaveEmptyRaw(ns);
      await withSocket(ns, async (sock) => {
        const s = await inspectTable(sock, NFPROTO_IPV4, 'raw');
        assert.ok(s && isEmptyTable(s), 'empty when read');
        // Someone adds a rule between our read and our delete.
        ns.exec('nft', ['add', 'rule', 'ip', 'raw', 'PREROUTING', 'counter', 'comment', '"arrived meanwhile"']);
        const during = ns.exec('nft', ['list', 'ruleset']);
        await assert.rejects(deleteTable(sock, NFPROTO_IPV4, 'raw', s.genid), (e: unknown) => {
          assert.ok(e instanceof NetlinkError);
          assert.equal(e.errnoName, 'ERESTART');
          assert.equal(e.op, 'NFNL_MSG_BATCH_BEGIN', 'the kernel answers the batch-begin');
          assert.match(e.message, /^NFNL_MSG_BATCH_BEGIN genid \d+: ERESTART - the ruleset changed/);
          t.diagnostic(e.message);
          return true;
        });
        assert.equal(ns.exec('nft', ['list', 'ruleset']), during, 'table and rule intact');
        assert.match(during, /arrived meanwhile/);
        assert.equal(await deleteTableIfEmpty(sock, NFPROTO_IPV4, 'raw'), false, 'a fresh read sees the rule');
        assert.equal(ns.exec('nft', ['list', 'ruleset']), during);
        // With the current generation the same delete goes through: the refusal was the guard's.
        await deleteTable(sock, NFPROTO_IPV4, 'raw', await getGeneration(sock));
        assert.equal(ns.exec('nft', ['list', 'ruleset']), '');
      });
    });
  },
);

test(
  'a failing message inside the batch: DELTABLE of a table that is not there rejects with ENOENT against NFT_MSG_DELTABLE; nothing to tidy is not an error',
  { skip: !NFT },
  async () => {
    await withNetns(async (ns) => {
      await withSocket(ns, async (sock) => {
        for (const family of [NFPROTO_IPV4, NFPROTO_IPV6] as NftFamily[]) {
          await assert.rejects(deleteTable(sock, family, 'raw', await getGeneration(sock)), (e: unknown) => {
            assert.ok(e instanceof NetlinkError);
            assert.equal(e.errnoName, 'ENOENT');
            assert.equal(e.op, 'NFT_MSG_DELTABLE');
            assert.equal(e.object, family === NFPROTO_IPV6 ? 'ip6 raw' : 'ip raw');
            return true;
          });
          assert.equal(await deleteTableIfEmpty(sock, family, 'raw'), false);
        }
        // The socket still works after the errors.
        assert.ok((await getGeneration(sock)) > 0);
      });
      assert.equal(await new Iptables({ backend: 'nft', netns: ns.name }).tidyTable('raw'), false);
      assert.equal(ns.exec('nft', ['list', 'ruleset']), '');
    });
  },
);
