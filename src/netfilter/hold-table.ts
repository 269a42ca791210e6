/**
 * The nfqueue backend's steering while a hold is on (`setup --steering while-holding`): an nf_tables
 * table of synhold's own that exists only from a hold's start to its release, so between holds no
 * netfilter hook of synhold's is in the path of any packet.
 *
 * Why: a rule in iptables' raw PREROUTING costs every packet of the host the base chain's hook
 * (docs/STEADY-STATE.md measured ~5% of loopback request rate on this kernel, the same with the
 * rule on an unused port: the hook, not the rule). A base chain registers its hook when it is
 * created and unregisters it when it is deleted, so a table that lives only during a hold costs
 * nothing the rest of the time.
 *
 * The tables, one per IP family the matches need, as `nft list table ip synhold-q7001` prints one
 * while a hold is on:
 *
 *   table ip synhold-q7001 { # flags owner
 *     chain hold {
 *       type filter hook prerouting priority raw; policy accept;
 *       tcp flags syn / fin,syn,rst,ack tcp dport 8080 counter packets 0 bytes 0 queue num 7001 bypass
 *     }
 *   }
 *
 * The queueing is xt_NFQUEUE through nft_compat (`target name NFQUEUE rev 3`, as iptables-nft
 * writes it), not nft's own queue expression: Debian's and this project's kernels build xt_NFQUEUE
 * but not always nft_queue (this machine's 6.18 answers ENOENT for `queue`). nft_compat's
 * targets live in the ip and ip6 families, hence a table per family rather than one inet table.
 *
 * Kernel facts (include/uapi/linux/netfilter/nf_tables.h, net/netfilter/nf_tables_api.c; checked on
 * this kernel by test/kernel/hold-table.test.ts with `nft list ruleset` as the oracle):
 * - NFT_TABLE_F_OWNER ties the table to the netlink socket that created it: only that socket may
 *   change it, and the kernel deletes it when the socket is released (its last fd closed). The
 *   watchdog keeps a duplicate of that socket, so the table outlives the owner's crash exactly as
 *   long as the queue does, and never outlives both.
 * - Every integer attribute is big-endian; the hook priority is signed (raw: -300).
 * - A transaction is one datagram: BATCH_BEGIN, the changes, BATCH_END. The kernel does not check
 *   that sequence numbers differ, so the watchdog's copy of the delete carries one number on all
 *   three messages: the ack it waits for (of the delete) answers the first header's number.
 */
import { addressBytes, prefixMaskBytes, type Prefix } from '../model/prefix.js';
import type { SynMatch } from '../model/syn-match.js';
import { NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL } from '../netlink/message.js';
import { defineAttributes, encodeAttr, NLA_F_NESTED } from '../netlink/schema.js';
import { encodeBatch, type BatchMessage } from '../netlink/socket.js';
import { NF_ACCEPT, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFPROTO_IPV4, NFPROTO_IPV6 } from './nfnetlink.js';
import {
  batchDelimiter,
  deleteTablesBatch,
  familyName,
  NFT_TABLE_F_OWNER,
  tableComment,
  NFT_TYPE_NEWCHAIN,
  NFT_TYPE_NEWRULE,
  NFT_TYPE_NEWTABLE,
  nftBody,
  nftChainAttrs,
  nftTableAttrs,
} from './nf_tables.js';

export type HoldFamily = typeof NFPROTO_IPV4 | typeof NFPROTO_IPV6;

/** The hold table of queue `queue`: one per queue, so two setups in one namespace never share one. */
/** The comment of a hold table kept past its hold (owner: false), which says whose it is. */
export const KEPT_TABLE_COMMENT = 'synhold: kept while another NFQUEUE user is bound; synhold teardown removes it';

export function holdTableName(queue: number): string {
  return `synhold-q${queue}`;
}

export const HOLD_CHAIN = 'hold';
/** NF_INET_PRE_ROUTING, at raw's priority: before conntrack, as iptables' raw PREROUTING (src/netfilter/rules.ts). */
const NF_INET_PRE_ROUTING = 0;
export const HOLD_PRIORITY = -300;

// enum nft_registers: NFT_REG_1, the first 16-byte data register.
const REG = 1;
// enum nft_meta_keys
const NFT_META_L4PROTO = 16;
// enum nft_payload_bases
const NFT_PAYLOAD_NETWORK_HEADER = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER = 2;
const NFT_CMP_EQ = 0;
/** struct xt_NFQ_info_v3's NFQ_FLAG_BYPASS (include/uapi/linux/netfilter/xt_NFQUEUE.h). */
const NFQ_FLAG_BYPASS = 0x01;
const IPPROTO_TCP = 6;
/** TCP flags byte: FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10. iptables' --syn: of these, SYN alone. */
const TCP_FLAGS_OFFSET = 13;
const SYN_MASK = 0x17;
const SYN = 0x02;

const ruleAttrs = defineAttributes('nft_rule_attributes', {
  table: { type: 1, kind: 'string' },
  chain: { type: 2, kind: 'string' },
  /** NFTA_RULE_EXPRESSIONS: a list of NFTA_LIST_ELEM, each an expression (encodeExpr). */
  expressions: { type: 4, kind: 'binary', nestedFlag: true },
});
const exprAttrs = defineAttributes('nft_expr_attributes', {
  name: { type: 1, kind: 'string' },
  data: { type: 2, kind: 'binary', nestedFlag: true },
});
const dataAttrs = defineAttributes('nft_data_attributes', { value: { type: 1, kind: 'binary' } });
const metaAttrs = defineAttributes('nft_meta_attributes', { dreg: { type: 1, kind: 'be32' }, key: { type: 2, kind: 'be32' } });
const cmpAttrs = defineAttributes('nft_cmp_attributes', {
  sreg: { type: 1, kind: 'be32' },
  op: { type: 2, kind: 'be32' },
  data: { type: 3, kind: 'nested', set: () => dataAttrs, nestedFlag: true },
});
const payloadAttrs = defineAttributes('nft_payload_attributes', {
  dreg: { type: 1, kind: 'be32' },
  base: { type: 2, kind: 'be32' },
  offset: { type: 3, kind: 'be32' },
  len: { type: 4, kind: 'be32' },
});
const bitwiseAttrs = defineAttributes('nft_bitwise_attributes', {
  sreg: { type: 1, kind: 'be32' },
  dreg: { type: 2, kind: 'be32' },
  len: { type: 3, kind: 'be32' },
  mask: { type: 4, kind: 'nested', set: () => dataAttrs, nestedFlag: true },
  xor: { type: 5, kind: 'nested', set: () => dataAttrs, nestedFlag: true },
});
/** enum nft_target_attributes (nft_compat). */
const targetAttrs = defineAttributes('nft_target_attributes', {
  name: { type: 1, kind: 'string' },
  rev: { type: 2, kind: 'be32' },
  /** The xtables target's own struct, in host byte order. */
  info: { type: 3, kind: 'binary' },
});

/**
 * `-j NFQUEUE --queue-num N --queue-bypass`: struct xt_NFQ_info_v3 { u16 queuenum; u16 queues_total;
 * u16 flags; } in host order, padded to XT_ALIGN (8), as iptables-nft sends it.
 */
function nfqueueTarget(queue: number): NftExpr {
  const info = Buffer.alloc(8);
  const le = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  const w = (v: number, at: number) => (le ? info.writeUInt16LE(v, at) : info.writeUInt16BE(v, at));
  w(queue, 0);
  w(1, 2);
  w(NFQ_FLAG_BYPASS, 4);
  return { name: 'target', data: targetAttrs.encode({ name: 'NFQUEUE', rev: 3, info }) };
}

/** One expression of a rule: its name and its attributes. */
export interface NftExpr {
  name: string;
  data: Buffer;
}

const meta = (key: number): NftExpr => ({ name: 'meta', data: metaAttrs.encode({ dreg: REG, key }) });
const cmpEq = (value: Buffer): NftExpr => ({ name: 'cmp', data: cmpAttrs.encode({ sreg: REG, op: NFT_CMP_EQ, data: { value } }) });
const payload = (base: number, offset: number, len: number): NftExpr => ({ name: 'payload', data: payloadAttrs.encode({ dreg: REG, base, offset, len }) });
const bitwise = (mask: Buffer): NftExpr => ({
  name: 'bitwise',
  data: bitwiseAttrs.encode({ sreg: REG, dreg: REG, len: mask.length, mask: { value: mask }, xor: { value: Buffer.alloc(mask.length) } }),
});

/** `ip saddr|daddr A/LEN` or `ip6 ...`: the address loaded, masked if a prefix, compared. Nothing for /0. */
function addressMatch(p: Prefix, family: 4 | 6, which: 'src' | 'dst'): NftExpr[] {
  if (p.prefixLength === 0) return [];
  const bytes = addressBytes(p.address);
  const offset = family === 4 ? (which === 'src' ? 12 : 16) : which === 'src' ? 8 : 24;
  const mask = prefixMaskBytes(p.prefixLength, bytes.length);
  const whole = p.prefixLength === bytes.length * 8;
  const masked = Buffer.from(bytes.map((b, i) => b & mask[i]!));
  return [payload(NFT_PAYLOAD_NETWORK_HEADER, offset, bytes.length), ...(whole ? [] : [bitwise(mask)]), cmpEq(masked)];
}

/**
 * The expressions of one match's rule, equivalent to iptables' `-p tcp [-s SRC] [-d DST] --syn --dport P
 * -j NFQUEUE --queue-num N --queue-bypass` (src/netfilter/rules.ts nfqueueRule), plus a counter.
 */
export function synQueueExprs(m: SynMatch, queue: number): NftExpr[] {
  const port = Buffer.alloc(2);
  port.writeUInt16BE(m.port);
  return [
    meta(NFT_META_L4PROTO),
    cmpEq(Buffer.from([IPPROTO_TCP])),
    ...(m.src ? addressMatch(m.src, m.family, 'src') : []),
    ...(m.dst ? addressMatch(m.dst, m.family, 'dst') : []),
    payload(NFT_PAYLOAD_TRANSPORT_HEADER, TCP_FLAGS_OFFSET, 1),
    bitwise(Buffer.from([SYN_MASK])),
    cmpEq(Buffer.from([SYN])),
    payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
    cmpEq(port),
    { name: 'counter', data: Buffer.alloc(0) },
    nfqueueTarget(queue),
  ];
}

/** NFTA_RULE_EXPRESSIONS' payload: each expression an NFTA_LIST_ELEM. */
export function encodeExprList(exprs: readonly NftExpr[]): Buffer {
  return Buffer.concat(exprs.map((e) => encodeAttr(1 | NLA_F_NESTED, exprAttrs.encode(e.data.length ? { name: e.name, data: e.data } : { name: e.name }))));
}

/** The nf_tables family (and so the hold table) a match belongs to. */
export const nftFamilyOf = (m: SynMatch): HoldFamily => (m.family === 4 ? NFPROTO_IPV4 : NFPROTO_IPV6);

/** The families a set of matches needs a table in, IPv4 first. */
export function holdFamilies(matches: readonly SynMatch[]): HoldFamily[] {
  return ([NFPROTO_IPV4, NFPROTO_IPV6] as const).filter((f) => matches.some((m) => nftFamilyOf(m) === f));
}

/**
 * The transaction that turns the steering on: per family, the table (owned by the sending socket;
 * refused with EEXIST if a table of that name exists, so another's table is never taken over), its
 * base chain, one rule per match. ACK on the last change: the batch resolves once the whole
 * transaction is in, or fails whole.
 * Equivalent to: `nft -f` of the tables the module comment shows, with `flags owner`.
 * `owner: false`: a table no socket owns, which outlives the hold (backends/nfqueue.ts: kept while
 * another NFQUEUE user is bound, since its delete would drop what that user holds).
 */
export function addHoldTableBatch(queue: number, matches: readonly SynMatch[], o: { hook?: boolean; owner?: boolean } = {}): BatchMessage[] {
  const table = holdTableName(queue);
  const msgs: BatchMessage[] = [{ type: NFNL_MSG_BATCH_BEGIN, payload: batchDelimiter(), op: 'NFNL_MSG_BATCH_BEGIN' }];
  for (const family of holdFamilies(matches)) {
    const object = `${familyName(family)} ${table}`;
    msgs.push(
      {
        type: NFT_TYPE_NEWTABLE,
        payload: nftBody(
          family,
          nftTableAttrs.encode(
            o.owner === false ? { name: table, flags: 0, userdata: tableComment(KEPT_TABLE_COMMENT) } : { name: table, flags: NFT_TABLE_F_OWNER },
          ),
        ),
        flags: NLM_F_CREATE | NLM_F_EXCL,
        op: 'NFT_MSG_NEWTABLE',
        object,
      },
      {
        type: NFT_TYPE_NEWCHAIN,
        payload: nftBody(
          family,
          nftChainAttrs.encode({
            table,
            name: HOLD_CHAIN,
            // Without the hook (setup's probe), a regular chain: the kernel checks the table, the
            // rules and their target the same way, but no packet ever passes it.
            ...(o.hook === false ? {} : { hook: { hooknum: NF_INET_PRE_ROUTING, priority: HOLD_PRIORITY >>> 0 }, policy: NF_ACCEPT, type: 'filter' }),
          }),
        ),
        flags: NLM_F_CREATE,
        op: 'NFT_MSG_NEWCHAIN',
        object: `${object} ${HOLD_CHAIN}`,
      },
      ...matches
        .filter((m) => nftFamilyOf(m) === family)
        .map((m): BatchMessage => ({
          type: NFT_TYPE_NEWRULE,
          payload: nftBody(family, ruleAttrs.encode({ table, chain: HOLD_CHAIN, expressions: encodeExprList(synQueueExprs(m, queue)) })),
          flags: NLM_F_CREATE | NLM_F_APPEND,
          op: 'NFT_MSG_NEWRULE',
          object: `${object} ${HOLD_CHAIN} (port ${m.port})`,
        })),
    );
  }
  msgs.push({ type: NFNL_MSG_BATCH_END, payload: batchDelimiter(), op: 'NFNL_MSG_BATCH_END' });
  // The last change asks for the ACK: the kernel answers a batch's messages in order.
  msgs[msgs.length - 2]!.ack = true;
  return msgs;
}

/** The transaction that turns it off: the tables and everything in them, in one transaction (all or none). */
export function deleteHoldTableBatch(queue: number, families: readonly HoldFamily[]): BatchMessage[] {
  return deleteTablesBatch(
    families.map((family) => ({ family, name: holdTableName(queue) })),
    0,
  );
}

/**
 * One family's delete as the watchdog sends it: a transaction of its own (an ENOENT for one table
 * must not undo the other's delete), every header carrying `seq` (reserved on the owner's socket),
 * so the ack of the delete answers the number the watchdog waits for. ENOENT (the owner deleted it
 * first, or it was never made) is, to the watchdog, nothing left to release.
 */
export function encodeDeleteHoldTableForWatchdog(queue: number, family: HoldFamily, seq: number): Buffer {
  const msgs = deleteHoldTableBatch(queue, [family]);
  return encodeBatch(
    msgs,
    msgs.map(() => seq),
  );
}
