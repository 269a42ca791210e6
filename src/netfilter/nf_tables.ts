/**
 * nf_tables over nfnetlink (include/uapi/linux/netfilter/nf_tables.h,
 * net/netfilter/nf_tables_api.c): just enough to read a table, its chains and
 * its rules, and to delete the table in a transaction that the kernel refuses if
 * anything changed since the read. synhold uses it to remove the empty table
 * iptables-nft leaves behind, in-process, so it never needs the `nft` program.
 *
 * Kernel facts this module relies on (checked in nf_tables_api.c and nfnetlink.c,
 * and on this project's 6.18 kernel by test/kernel/nf_tables.test.ts):
 * - Every nf_tables integer attribute is big-endian (NFTA_TABLE_USE,
 *   NFTA_CHAIN_POLICY, NFTA_HOOK_PRIORITY, NFTA_GEN_ID, the 64-bit handles).
 * - NFTA_TABLE_USE counts what hangs off the table: its chains (base and user),
 *   sets (anonymous ones included), stateful objects and flowtables. Rules count
 *   against their chain, not the table.
 * - A chain dump is filtered by family only (nf_tables_dump_chains ignores
 *   NFTA_CHAIN_TABLE); a rule dump honours NFTA_RULE_TABLE.
 * - Changes go in a transaction: NFNL_MSG_BATCH_BEGIN, the changes,
 *   NFNL_MSG_BATCH_END, in one datagram. With NFNL_BATCH_GENID in the batch-begin
 *   the kernel, holding the commit mutex, first compares that id with the
 *   ruleset's generation (the one NFT_MSG_GETGEN reports) and refuses the whole
 *   batch with ERESTART, addressed to the batch-begin, if any transaction was
 *   committed since: a compare-and-swap over the whole ruleset. An id of 0 turns
 *   the check off; the kernel skips generation 0 when it counts.
 * - Deleting a table deletes everything in it (its chains and their rules, sets,
 *   objects): the generation check is what keeps a delete-if-empty from taking
 *   something that appeared after the read.
 * - Success ACKs only the messages that asked (NLM_F_ACK); the batch-begin and
 *   batch-end get none. nft 1.0.6 asks for no ACK and sends no generation id
 *   (test/fixtures/nftables/delete-table-ip-raw.json).
 */
import { DecodeError, NetlinkError } from '../netlink/errors.js';
import type { NetlinkMessage } from '../netlink/message.js';
import { defineAttributes, type AttrSpecMap, type AttributeSet, type AttrValues } from '../netlink/schema.js';
import type { BatchMessage, NetlinkSocket } from '../netlink/socket.js';
import { ERRNO } from '../netlink/errno.js';
import {
  AF_UNSPEC,
  NF_ACCEPT,
  NFNETLINK_V0,
  NFNL_MSG_BATCH_BEGIN,
  NFNL_MSG_BATCH_END,
  NFNL_SUBSYS_NFTABLES,
  NFPROTO_IPV4,
  NFPROTO_IPV6,
  NFPROTO_UNSPEC,
  nfgenmsg,
  nfnlMsgType,
} from './nfnetlink.js';

export type NftFamily = typeof NFPROTO_IPV4 | typeof NFPROTO_IPV6;

// enum nf_tables_msg_types: only the messages synhold sends or reads.
export const NFT_MSG_NEWTABLE = 0;
export const NFT_MSG_GETTABLE = 1;
export const NFT_MSG_DELTABLE = 2;
export const NFT_MSG_NEWCHAIN = 3;
export const NFT_MSG_GETCHAIN = 4;
export const NFT_MSG_NEWRULE = 6;
export const NFT_MSG_GETRULE = 7;
export const NFT_MSG_NEWGEN = 15;
export const NFT_MSG_GETGEN = 16;

const { ERESTART, ENOENT } = ERRNO as { ERESTART: number; ENOENT: number };

/** enum nfnl_batch_attributes: attributes of NFNL_MSG_BATCH_BEGIN. */
export const nfnlBatchAttrs = defineAttributes('nfnl_batch_attributes', {
  /** Read by the kernel as __be32 although the policy says NLA_U32. */
  genid: { type: 1, kind: 'be32' },
});

/** enum nft_table_attributes */
export const nftTableAttrs = defineAttributes('nft_table_attributes', {
  name: { type: 1, kind: 'string' },
  /** enum nft_table_flags: DORMANT 0x1, OWNER 0x2, PERSIST 0x4. */
  flags: { type: 2, kind: 'be32' },
  use: { type: 3, kind: 'be32' },
  /** NFTA_TABLE_USERDATA (Linux 5.13): opaque to the kernel; nft keeps TLVs there (tableComment). */
  userdata: { type: 6, kind: 'binary' },
});

/** libnftnl's NFTNL_UDATA_TABLE_COMMENT: the TLV type of the comment `nft list table` prints. */
const NFTNL_UDATA_TABLE_COMMENT = 0;

/** A table's userdata holding one comment, as nft writes it (type, length, the text and its NUL). Equivalent to: `nft add table ip T '{ comment "TEXT"; }'`. */
export function tableComment(text: string): Buffer {
  const value = Buffer.from(`${text}\0`);
  if (value.length > 128) throw new RangeError(`a table comment holds 127 bytes at most: ${text}`);
  return Buffer.concat([Buffer.from([NFTNL_UDATA_TABLE_COMMENT, value.length]), value]);
}

/** The comment in a table's userdata (the first TLV of its type), or undefined. */
export function commentOf(userdata: Buffer | undefined): string | undefined {
  for (let off = 0; userdata && off + 2 <= userdata.length; off += 2 + userdata[off + 1]!) {
    const len = userdata[off + 1]!;
    if (userdata[off] === NFTNL_UDATA_TABLE_COMMENT && off + 2 + len <= userdata.length)
      return userdata
        .subarray(off + 2, off + 2 + len)
        .toString()
        .replace(/\0$/, '');
  }
  return undefined;
}

/** NFT_TABLE_F_OWNER (Linux 5.12): the table belongs to the netlink socket that made it and goes when that socket closes. */
export const NFT_TABLE_F_OWNER = 0x2;

/** enum nft_hook_attributes: NFTA_CHAIN_HOOK, present on base chains only. */
export const nftHookAttrs = defineAttributes('nft_hook_attributes', {
  /** NF_INET_PRE_ROUTING 0 ... NF_INET_POST_ROUTING 4. */
  hooknum: { type: 1, kind: 'be32' },
  /** Signed on the wire (raw is -300): read it through hookPriority(). */
  priority: { type: 2, kind: 'be32' },
  dev: { type: 3, kind: 'string' },
});

/** enum nft_chain_attributes */
export const nftChainAttrs = defineAttributes('nft_chain_attributes', {
  table: { type: 1, kind: 'string' },
  name: { type: 3, kind: 'string' },
  hook: { type: 4, kind: 'nested', set: () => nftHookAttrs },
  /** NF_ACCEPT or NF_DROP; base chains only. */
  policy: { type: 5, kind: 'be32' },
  /** References to the chain (jumps and gotos), not its rules. */
  use: { type: 6, kind: 'be32' },
  /** `filter`, `nat`, `route`. */
  type: { type: 7, kind: 'string' },
  /** enum nft_chain_flags: BASE 0x1, HW_OFFLOAD 0x2, BINDING 0x4. */
  flags: { type: 10, kind: 'be32' },
});

/** enum nft_rule_attributes: only where a rule lives; its expressions stay raw. */
export const nftRuleAttrs = defineAttributes('nft_rule_attributes', {
  table: { type: 1, kind: 'string' },
  chain: { type: 2, kind: 'string' },
});

/** enum nft_gen_attributes: the answer to NFT_MSG_GETGEN. */
export const nftGenAttrs = defineAttributes('nft_gen_attributes', {
  id: { type: 1, kind: 'be32' },
  /** The process the message is about: in a NEWGEN event the committer, in the reply to GETGEN the asker. */
  procPid: { type: 2, kind: 'be32' },
  procName: { type: 3, kind: 'string' },
});

export const NFT_TYPE_NEWTABLE = nfnlMsgType(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWTABLE);
export const NFT_TYPE_GETTABLE = nfnlMsgType(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE);
export const NFT_TYPE_DELTABLE = nfnlMsgType(NFNL_SUBSYS_NFTABLES, NFT_MSG_DELTABLE);
export const NFT_TYPE_NEWCHAIN = nfnlMsgType(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWCHAIN);
export const NFT_TYPE_GETCHAIN = nfnlMsgType(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETCHAIN);
export const NFT_TYPE_NEWRULE = nfnlMsgType(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWRULE);
export const NFT_TYPE_GETRULE = nfnlMsgType(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETRULE);
export const NFT_TYPE_NEWGEN = nfnlMsgType(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN);
export const NFT_TYPE_GETGEN = nfnlMsgType(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN);

// ---------------------------------------------------------------------------
// Codec: message payloads (after struct nlmsghdr) and what the kernel sends back
// ---------------------------------------------------------------------------

/** `ip` or `ip6`, as nft spells the family. */
export function familyName(family: NftFamily): string {
  return family === NFPROTO_IPV6 ? 'ip6' : 'ip';
}

/** struct nfgenmsg then the attributes; res_id is 0 for nf_tables requests. */
export function nftBody(family: number, attrs: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([nfgenmsg.encode({ family, version: NFNETLINK_V0, resId: 0 }), attrs]);
}

/** Decodes the attributes after struct nfgenmsg. */
export function decodeNftMessage<M extends AttrSpecMap>(m: NetlinkMessage, set: AttributeSet<M>): { family: number; attrs: AttrValues<M> } {
  const h = nfgenmsg.decode(m.payload);
  return { family: h.family, attrs: set.decode(m.payload.subarray(nfgenmsg.size)) };
}

export interface NftTable {
  family: number;
  name: string;
  flags: number;
  /** Chains, sets, objects and flowtables in the table. */
  use: number;
  /** What `nft list` prints as the table's comment (its userdata). */
  comment?: string;
}

export interface NftChain {
  family: number;
  table: string;
  name: string;
  /** Present on base chains only. */
  hook?: { hooknum: number; priority: number };
  /** Base chains only. */
  policy?: number;
}

export interface NftRule {
  table: string;
  chain: string;
}

/** NFTA_HOOK_PRIORITY as the signed number it is. */
export function hookPriority(raw: number): number {
  return raw | 0;
}

export function decodeTable(m: NetlinkMessage): NftTable {
  const { family, attrs } = decodeNftMessage(m, nftTableAttrs);
  if (attrs.name === undefined) throw new DecodeError('NFT_MSG_NEWTABLE', 0, 'no NFTA_TABLE_NAME');
  const comment = commentOf(attrs.userdata);
  return { family, name: attrs.name, flags: attrs.flags ?? 0, use: attrs.use ?? 0, ...(comment !== undefined ? { comment } : {}) };
}

export function decodeChain(m: NetlinkMessage): NftChain {
  const { family, attrs } = decodeNftMessage(m, nftChainAttrs);
  if (attrs.table === undefined || attrs.name === undefined) throw new DecodeError('NFT_MSG_NEWCHAIN', 0, 'no NFTA_CHAIN_TABLE or NFTA_CHAIN_NAME');
  const c: NftChain = { family, table: attrs.table, name: attrs.name };
  if (attrs.hook) c.hook = { hooknum: attrs.hook.hooknum ?? 0, priority: hookPriority(attrs.hook.priority ?? 0) };
  if (attrs.policy !== undefined) c.policy = attrs.policy;
  return c;
}

export function decodeRule(m: NetlinkMessage): NftRule {
  const { attrs } = decodeNftMessage(m, nftRuleAttrs);
  if (attrs.table === undefined || attrs.chain === undefined) throw new DecodeError('NFT_MSG_NEWRULE', 0, 'no NFTA_RULE_TABLE or NFTA_RULE_CHAIN');
  return { table: attrs.table, chain: attrs.chain };
}

export function decodeGeneration(m: NetlinkMessage): number {
  const id = decodeNftMessage(m, nftGenAttrs).attrs.id;
  if (id === undefined) throw new DecodeError('NFT_MSG_NEWGEN', 0, 'no NFTA_GEN_ID');
  return id;
}

/** NFT_MSG_GETGEN. */
export function encodeGetGeneration(): Buffer {
  return nftBody(NFPROTO_UNSPEC);
}

/** NFT_MSG_GETTABLE of one table (not a dump). */
export function encodeGetTable(family: NftFamily, name: string): Buffer {
  return nftBody(family, nftTableAttrs.encode({ name }));
}

/** NFT_MSG_GETCHAIN dump of one family (the kernel filters by nothing else). */
export function encodeGetChains(family: NftFamily): Buffer {
  return nftBody(family);
}

/** NFT_MSG_GETRULE dump of one table. */
export function encodeGetRules(family: NftFamily, table: string): Buffer {
  return nftBody(family, nftRuleAttrs.encode({ table }));
}

/** The batch-begin or batch-end of an nf_tables transaction: res_id names the subsystem (big-endian). */
export function batchDelimiter(attrs: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([nfgenmsg.encode({ family: AF_UNSPEC, version: NFNETLINK_V0, resId: NFNL_SUBSYS_NFTABLES }), attrs]);
}

/** The transaction deleteTable() sends: BATCH_BEGIN (with the generation id), DELTABLE (ACK), BATCH_END. */
export function deleteTableBatch(family: NftFamily, name: string, genid: number): BatchMessage[] {
  return deleteTablesBatch([{ family, name }], genid);
}

/**
 * Several tables deleted in one transaction (all or none): BATCH_BEGIN (with the generation id; 0
 * turns the check off), a DELTABLE each, the last asking for the ACK, BATCH_END.
 */
export function deleteTablesBatch(tables: readonly { family: NftFamily; name: string }[], genid: number): BatchMessage[] {
  return [
    { type: NFNL_MSG_BATCH_BEGIN, payload: batchDelimiter(nfnlBatchAttrs.encode({ genid })), op: 'NFNL_MSG_BATCH_BEGIN', object: `genid ${genid}` },
    ...tables.map(({ family, name }, i): BatchMessage => ({
      type: NFT_TYPE_DELTABLE,
      payload: nftBody(family, nftTableAttrs.encode({ name })),
      op: 'NFT_MSG_DELTABLE',
      object: `${familyName(family)} ${name}`,
      ack: i === tables.length - 1,
    })),
    { type: NFNL_MSG_BATCH_END, payload: batchDelimiter(), op: 'NFNL_MSG_BATCH_END' },
  ];
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

function hint(e: NetlinkError): string | undefined {
  if (e.errno === ERESTART) return 'the ruleset changed after its generation id was read; read it again';
  if (e.errno === 1) return 'nf_tables needs root (CAP_NET_ADMIN)';
  return undefined;
}

/** The ruleset's generation id. Equivalent to: none; every `nft` command asks it first (no command prints it). */
export async function getGeneration(sock: NetlinkSocket): Promise<number> {
  const replies = await sock.request(NFT_TYPE_GETGEN, encodeGetGeneration(), { op: 'NFT_MSG_GETGEN', hint });
  const m = replies.find((r) => r.type === NFT_TYPE_NEWGEN);
  if (!m) throw new DecodeError('NFT_MSG_GETGEN', 0, 'the kernel ACKed without NFT_MSG_NEWGEN');
  return decodeGeneration(m);
}

/** One table, or undefined if there is none by that name. Equivalent to: `nft list table ip raw` (its first line). */
export async function getTable(sock: NetlinkSocket, family: NftFamily, name: string): Promise<NftTable | undefined> {
  let replies: NetlinkMessage[];
  try {
    replies = await sock.request(NFT_TYPE_GETTABLE, encodeGetTable(family, name), {
      op: 'NFT_MSG_GETTABLE',
      object: `${familyName(family)} ${name}`,
      hint,
    });
  } catch (e) {
    if (e instanceof NetlinkError && e.errno === ENOENT) return undefined;
    throw e;
  }
  const m = replies.find((r) => r.type === NFT_TYPE_NEWTABLE);
  if (!m) throw new DecodeError('NFT_MSG_GETTABLE', 0, 'the kernel ACKed without NFT_MSG_NEWTABLE');
  return decodeTable(m);
}

/** The chains of one table, base and user. Equivalent to: `nft list chains ip`, keeping those of table `table`. */
export async function listChains(sock: NetlinkSocket, family: NftFamily, table: string): Promise<NftChain[]> {
  const replies = await sock.dumpConsistent(NFT_TYPE_GETCHAIN, encodeGetChains(family), { op: 'NFT_MSG_GETCHAIN', object: familyName(family), hint });
  // The kernel does not filter a chain dump by table.
  return replies
    .filter((m) => m.type === NFT_TYPE_NEWCHAIN)
    .map(decodeChain)
    .filter((c) => c.table === table);
}

/** enum nft_rule_attributes with the expressions kept as their raw bytes (for a search, not a decode). */
const nftRuleWithExprAttrs = defineAttributes('nft_rule_attributes', {
  table: { type: 1, kind: 'string' },
  chain: { type: 2, kind: 'string' },
  expressions: { type: 4, kind: 'binary' },
});

/**
 * The rules of one chain as raw expression bytes. iptables-nft keeps an xt
 * match's data (a comment's text) and a target's name inside them verbatim,
 * which is enough to find a rule by the comment synhold tags it with, in one
 * dump instead of an `iptables -C` process.
 */
export async function listRuleExpressions(sock: NetlinkSocket, family: NftFamily, table: string, chain: string): Promise<Buffer[]> {
  let replies: NetlinkMessage[];
  try {
    replies = await dumpRules(sock, family, table);
  } catch (e) {
    // No such table: no rules.
    if ((e as { errno?: number }).errno === 2) return [];
    throw e;
  }
  return replies
    .map((m) => decodeNftMessage(m, nftRuleWithExprAttrs).attrs)
    .filter((a) => a.chain === chain && a.expressions !== undefined)
    .map((a) => a.expressions!);
}

/** The rules of one table, every chain. Equivalent to: the rules `nft list table ip raw` prints. */
export async function listRules(sock: NetlinkSocket, family: NftFamily, table: string): Promise<NftRule[]> {
  return (await dumpRules(sock, family, table)).map(decodeRule);
}

/** One table's NFT_MSG_NEWRULE messages, from a consistent dump. */
async function dumpRules(sock: NetlinkSocket, family: NftFamily, table: string): Promise<NetlinkMessage[]> {
  const replies = await sock.dumpConsistent(NFT_TYPE_GETRULE, encodeGetRules(family, table), {
    op: 'NFT_MSG_GETRULE',
    object: `${familyName(family)} ${table}`,
    hint,
  });
  return replies.filter((m) => m.type === NFT_TYPE_NEWRULE);
}

/**
 * Deletes a table and everything in it, in one transaction that the kernel
 * refuses with ERESTART (NetlinkError, op NFNL_MSG_BATCH_BEGIN) unless the
 * ruleset is still at generation `genid`.
 * Equivalent to: `nft delete table ip raw`, made conditional on the generation.
 */
export async function deleteTable(sock: NetlinkSocket, family: NftFamily, name: string, genid: number): Promise<void> {
  await sock.batch(deleteTableBatch(family, name, genid), { op: `nf_tables transaction (delete table ${familyName(family)} ${name})`, hint });
}

/** A table as read at one generation of the ruleset. */
export interface NftTableSnapshot {
  /** Read before everything else, so any later change makes it stale. */
  genid: number;
  table: NftTable;
  chains: NftChain[];
  rules: NftRule[];
}

/** The table, its chains and rules, and the generation they were read at; undefined if there is no such table. Equivalent to: `nft list table ip raw`. */
export async function inspectTable(sock: NetlinkSocket, family: NftFamily, name: string): Promise<NftTableSnapshot | undefined> {
  const genid = await getGeneration(sock);
  const table = await getTable(sock, family, name);
  if (!table) return undefined;
  return { genid, table, chains: await listChains(sock, family, name), rules: await listRules(sock, family, name) };
}

/**
 * Whether the table holds nothing anyone made on purpose: every chain a base
 * chain (it has a hook) with policy accept, no rule anywhere, and no set, object
 * or flowtable - the use count is the chains alone. Such a table lets every packet
 * through as if it were not there; this is what iptables-nft leaves after its
 * last rule goes. A table with flags (dormant, owned by a process, persistent)
 * is someone's configuration: not empty.
 */
export function isEmptyTable(s: NftTableSnapshot): boolean {
  return (
    s.table.flags === 0 && s.rules.length === 0 && s.chains.every((c) => c.hook !== undefined && c.policy === NF_ACCEPT) && s.table.use === s.chains.length
  );
}

/**
 * Deletes the table if, and only if, it is empty (isEmptyTable), atomically: the
 * delete carries the generation id read before the table, so the kernel refuses
 * it if anything changed in between; then it reads again, up to `attempts` times
 * in all. Returns whether it deleted the table (false: absent, not empty, or the
 * ruleset kept changing).
 * Equivalent to: `nft list table ip raw`, and if that shows only empty base
 * chains with policy accept, `nft delete table ip raw`, with nothing in between.
 */
export async function deleteTableIfEmpty(sock: NetlinkSocket, family: NftFamily, name: string, attempts = 3): Promise<boolean> {
  for (let i = 1; ; i++) {
    const s = await inspectTable(sock, family, name);
    if (!s || !isEmptyTable(s)) return false;
    try {
      await deleteTable(sock, family, name, s.genid);
      return true;
    } catch (e) {
      if (!(e instanceof NetlinkError) || e.errno !== ERESTART) throw e;
      if (i >= attempts) return false;
    }
  }
}
