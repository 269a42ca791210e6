/**
 * Codec tests of src/netfilter/nf_tables.ts on golden bytes: test/fixtures/nftables/
 * holds what nft 1.0.6 sent and received (captured with strace, see its README).
 * synhold's requests must be nft's bytes apart from seq and pid, and, where it asks
 * for more (the generation guard, an ACK), exactly that much more; its decoders
 * must read the kernel's replies to nft.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeMessages, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, type NetlinkMessage } from '../../src/netlink/message.js';
import { encodeBatch } from '../../src/netlink/socket.js';
import { NFPROTO_IPV4, NFPROTO_IPV6, nfgenmsg } from '../../src/netfilter/nfnetlink.js';
import {
  NFT_TYPE_GETCHAIN,
  NFT_TYPE_GETGEN,
  NFT_TYPE_GETRULE,
  NFT_TYPE_GETTABLE,
  NFT_TYPE_NEWCHAIN,
  NFT_TYPE_NEWGEN,
  NFT_TYPE_NEWRULE,
  NFT_TYPE_NEWTABLE,
  decodeChain,
  decodeGeneration,
  decodeNftMessage,
  decodeRule,
  decodeTable,
  deleteTableBatch,
  encodeGetChains,
  encodeGetGeneration,
  encodeGetRules,
  encodeGetTable,
  isEmptyTable,
  nftGenAttrs,
  type NftFamily,
} from '../../src/netfilter/nf_tables.js';

// Fixtures live in the source tree; tests run from dist/test/codec.
const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fixtures', 'nftables');

interface Exchange {
  sent: string[];
  requestHex: string;
  replyHex: string[];
}

interface Fixture {
  command: string;
  exchanges: Exchange[];
}

function fixture(name: string): Fixture {
  return JSON.parse(readFileSync(join(FIXTURES, `${name}.json`), 'utf8')) as Fixture;
}

/** The one exchange in which nft sent exactly `sent`. */
function exchange(f: Fixture, ...sent: string[]): Exchange {
  const found = f.exchanges.filter((e) => e.sent.join() === sent.join());
  assert.ok(found.length >= 1, `${f.command}: nft sent no ${sent.join(', ')}`);
  return found[0]!;
}

function replies(e: Exchange): NetlinkMessage[] {
  return e.replyHex.flatMap((h) => decodeMessages(Buffer.from(h, 'hex')));
}

/** A header without seq and pid, for comparing. */
const header = (m: NetlinkMessage) => ({ type: m.type, flags: m.flags });

for (const [name, family] of [
  ['delete-table-ip-raw', NFPROTO_IPV4],
  ['delete-table-ip6-raw', NFPROTO_IPV6],
] as [string, NftFamily][]) {
  test(`golden batch: ${name} (${fixture(name).command}) - nft's three messages, plus the generation id and an ACK`, () => {
    const f = fixture(name);
    const theirs = decodeMessages(Buffer.from(exchange(f, 'NFNL_MSG_BATCH_BEGIN', 'NFT_MSG_DELTABLE', 'NFNL_MSG_BATCH_END').requestHex, 'hex'));
    const genid = 0x01020304;
    const ours = decodeMessages(encodeBatch(deleteTableBatch(family, 'raw', genid), [7, 8, 9]));
    assert.equal(ours.length, 3);
    assert.deepEqual(
      ours.map((m) => m.seq),
      [7, 8, 9],
      'one datagram, consecutive seqs',
    );
    const [oBegin, oDel, oEnd] = ours as [NetlinkMessage, NetlinkMessage, NetlinkMessage];
    const [tBegin, tDel, tEnd] = theirs as [NetlinkMessage, NetlinkMessage, NetlinkMessage];

    // BATCH_BEGIN: nft's bytes, then NFNL_BATCH_GENID (type 1) as a big-endian u32.
    assert.deepEqual(header(oBegin), header(tBegin));
    assert.deepEqual(nfgenmsg.decode(tBegin.payload), { family: 0, version: 0, resId: 10 }, 'res_id is the nf_tables subsystem, big-endian');
    assert.equal(oBegin.payload.toString('hex'), tBegin.payload.toString('hex') + '08000100' + '01020304');

    // DELTABLE: nft's bytes exactly, with NLM_F_ACK added so the kernel tells us the outcome.
    assert.equal(tDel.flags, NLM_F_REQUEST, 'nft asks for no ACK');
    assert.deepEqual(header(oDel), { type: tDel.type, flags: tDel.flags | NLM_F_ACK });
    assert.equal(oDel.payload.toString('hex'), tDel.payload.toString('hex'));
    assert.equal(nfgenmsg.decode(oDel.payload).family, family);

    // BATCH_END: identical.
    assert.deepEqual(header(oEnd), header(tEnd));
    assert.equal(oEnd.payload.toString('hex'), tEnd.payload.toString('hex'));
    assert.deepEqual(exchange(f, 'NFNL_MSG_BATCH_BEGIN', 'NFT_MSG_DELTABLE', 'NFNL_MSG_BATCH_END').replyHex, [], 'without ACKs the kernel says nothing');
  });
}

test('golden requests: GETTABLE by name and the rule dump of one table are what nft sends (nft list table ip raw); GETGEN and the chain dump differ only where said', () => {
  const f = fixture('list-table-ip-raw');
  const same = (sent: string, type: number, flags: number, payload: Buffer) => {
    const theirs = decodeMessages(Buffer.from(exchange(f, sent).requestHex, 'hex'))[0]!;
    assert.deepEqual({ ...header(theirs), payload: theirs.payload.toString('hex') }, { type, flags, payload: payload.toString('hex') }, sent);
  };
  // NetlinkSocket.request() always adds NLM_F_ACK; dump() sends REQUEST|DUMP.
  same('NFT_MSG_GETTABLE', NFT_TYPE_GETTABLE, NLM_F_REQUEST | NLM_F_ACK, encodeGetTable(NFPROTO_IPV4, 'raw'));
  same('NFT_MSG_GETRULE', NFT_TYPE_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, encodeGetRules(NFPROTO_IPV4, 'raw'));
  // nft asks for the generation without an ACK; we take one (request()), the body is the same.
  same('NFT_MSG_GETGEN', NFT_TYPE_GETGEN, NLM_F_REQUEST, encodeGetGeneration());
  // nft dumps the chains of every family (0); we ask for one family, which the kernel does filter.
  const chains = decodeMessages(Buffer.from(exchange(f, 'NFT_MSG_GETCHAIN').requestHex, 'hex'))[0]!;
  assert.deepEqual(header(chains), { type: NFT_TYPE_GETCHAIN, flags: NLM_F_REQUEST | NLM_F_DUMP });
  assert.equal(encodeGetChains(NFPROTO_IPV4).toString('hex'), Buffer.from([NFPROTO_IPV4]).toString('hex') + chains.payload.subarray(1).toString('hex'));
});

test('golden replies: the generation, the table, its chain and its rule as the kernel described them to nft', () => {
  const del = fixture('delete-table-ip-raw');
  const gen = replies(exchange(del, 'NFT_MSG_GETGEN')).find((m) => m.type === NFT_TYPE_NEWGEN)!;
  const genid = decodeGeneration(gen);
  // Independent of our attribute decoding: the kernel also puts the generation in res_id.
  assert.equal(genid & 0xffff, nfgenmsg.decode(gen.payload).resId);
  assert.equal(decodeNftMessage(gen, nftGenAttrs).attrs.procName, 'nft', 'in the reply to GETGEN, the process that asked');

  const table = decodeTable(replies(exchange(del, 'NFT_MSG_GETTABLE')).find((m) => m.type === NFT_TYPE_NEWTABLE)!);
  assert.deepEqual(table, { family: NFPROTO_IPV4, name: 'raw', flags: 0, use: 1 });
  const chainMsgs = replies(exchange(del, 'NFT_MSG_GETCHAIN'));
  assert.equal(chainMsgs.at(-1)!.type, NLMSG_DONE);
  const chains = chainMsgs.filter((m) => m.type === NFT_TYPE_NEWCHAIN).map(decodeChain);
  assert.deepEqual(chains, [{ family: NFPROTO_IPV4, table: 'raw', name: 'PREROUTING', hook: { hooknum: 0, priority: -300 }, policy: 1 }]);
  assert.equal(isEmptyTable({ genid, table, chains, rules: [] }), true, 'what iptables-nft leaves is empty');

  const list = fixture('list-table-ip-raw');
  const rules = replies(exchange(list, 'NFT_MSG_GETRULE'))
    .filter((m) => m.type === NFT_TYPE_NEWRULE)
    .map(decodeRule);
  assert.deepEqual(rules, [{ table: 'raw', chain: 'PREROUTING' }]);
  const table2 = decodeTable(replies(exchange(list, 'NFT_MSG_GETTABLE')).find((m) => m.type === NFT_TYPE_NEWTABLE)!);
  assert.equal(isEmptyTable({ genid, table: table2, chains, rules }), false, 'one rule: not empty');
  assert.equal(isEmptyTable({ genid, table: { ...table, use: 2 }, chains, rules: [] }), false, 'a use count above the chains: a set or object');
  assert.equal(isEmptyTable({ genid, table, chains: [{ ...chains[0]!, policy: 0 }], rules: [] }), false, 'policy drop');
  assert.equal(isEmptyTable({ genid, table: { ...table, flags: 1 }, chains, rules: [] }), false, 'dormant');
  const userChain = { family: NFPROTO_IPV4, table: 'raw', name: 'someone' };
  assert.equal(isEmptyTable({ genid, table: { ...table, use: 2 }, chains: [...chains, userChain], rules: [] }), false, 'a user chain');
});
