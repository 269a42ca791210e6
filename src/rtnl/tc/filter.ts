/**
 * Filter (classifier) operations over rtnetlink, whatever the kind.
 */
import { UnknownKindError } from '../../model/errors.js';
import { NetlinkError } from '../../netlink/errors.js';
import { NLM_F_CREATE, NLM_F_EXCL } from '../../netlink/message.js';
import { linkIndex } from '../link.js';
import type { Rtnl } from '../rtnl.js';
import { clsFw } from './cls_fw.js';
import { clsU32 } from './cls_u32.js';
import { formatHandle } from './handle.js';
import { decodeOptionsOf, type TcKind } from './kind.js';
import {
  AF_UNSPEC,
  ETH_P_ALL,
  RTM_DELTFILTER,
  RTM_GETTFILTER,
  RTM_NEWTFILTER,
  filterInfo,
  infoPrio,
  infoProtocol,
  statsFrom,
  tcaAttrs,
  tcmsg,
  type TcaValues,
  type TcStats,
} from './tcmsg.js';

export const FILTER_KINDS: ReadonlyMap<string, TcKind<never>> = new Map<string, TcKind<never>>([clsU32, clsFw].map((k) => [k.kind, k as TcKind<never>]));

export interface FilterRef {
  dev: string | number;
  /** The qdisc (1:) or clsact hook (ffff:fff2) the filter hangs on. */
  parent: number;
  prio: number;
  /** ETH_P_IP, ETH_P_IPV6, ETH_P_ALL. */
  protocol?: number;
}

export interface FilterSpec<O = unknown> extends FilterRef {
  kind: string;
  /** For fw: the mark. For u32: 0 lets the kernel number it. */
  handle?: number;
  options: O;
}

export interface FilterInfo {
  ifindex: number;
  parent: number;
  prio: number;
  protocol: number;
  handle: number;
  kind: string;
  options?: unknown;
  stats?: TcStats;
  attrs: TcaValues;
}

export function describeFilter(f: FilterRef & { kind?: string }): string {
  const parts = [`dev ${f.dev}`, `parent ${formatHandle(f.parent)}`, `prio ${f.prio}`];
  if (f.protocol !== undefined) parts.push(`protocol 0x${f.protocol.toString(16).padStart(4, '0')}`);
  if (f.kind) parts.push(`kind ${f.kind}`);
  return parts.join(' ');
}

function filterHint(kind: string | undefined): (e: NetlinkError) => string | undefined {
  return (e) => {
    const text = e.kernelMessage ?? '';
    if ((e.errno === 2 || e.errno === 22 || e.errno === 95) && /unknown|not found/i.test(text) && /classifier|kind/i.test(text)) {
      return `this kernel lacks the ${kind ?? 'requested'} classifier (CONFIG_NET_CLS_${(kind ?? '').toUpperCase()})`;
    }
    if (e.errno === 2 && /parent|qdisc/i.test(text)) return 'no qdisc at that parent; run setup first';
    if (e.errno === 1) return 'needs root (CAP_NET_ADMIN)';
    return undefined;
  };
}

/** The RTM_NEWTFILTER body for a device already resolved to its index. */
export function encodeFilterRequest(ifindex: number, f: Omit<FilterSpec, 'dev'>): Buffer {
  const k = FILTER_KINDS.get(f.kind);
  if (!k) throw new UnknownKindError(`synhold cannot encode filter kind "${f.kind}"`);
  const attrs: TcaValues = { kind: f.kind };
  const opts = k.encodeOptions(f.options as never);
  if (opts !== undefined) attrs.options = opts;
  return Buffer.concat([
    tcmsg.encode({ family: AF_UNSPEC, ifindex, handle: f.handle ?? 0, parent: f.parent, info: filterInfo(f.prio, f.protocol ?? ETH_P_ALL) }),
    tcaAttrs.encode(attrs),
  ]);
}

/** The RTM_DELTFILTER body. */
export function encodeFilterDelete(ifindex: number, f: Omit<FilterRef, 'dev'>): Buffer {
  return tcmsg.encode({ family: AF_UNSPEC, ifindex, parent: f.parent, info: filterInfo(f.prio, f.protocol ?? 0) });
}

/** Adds a filter. Equivalent to: `tc filter add dev DEV parent P protocol PROTO prio N KIND ...`. */
export async function addFilter(rt: Rtnl, f: FilterSpec): Promise<void> {
  const body = encodeFilterRequest(await linkIndex(rt, f.dev), f);
  await rt.sock.request(RTM_NEWTFILTER, body, {
    op: 'RTM_NEWTFILTER',
    object: describeFilter(f),
    flags: NLM_F_CREATE | NLM_F_EXCL,
    hint: filterHint(f.kind),
  });
}

/** Deletes every filter at a priority. Equivalent to: `tc filter del dev DEV parent P prio N [protocol PROTO]`. */
export async function deleteFilter(rt: Rtnl, f: FilterRef): Promise<void> {
  const body = encodeFilterDelete(await linkIndex(rt, f.dev), f);
  await rt.sock.request(RTM_DELTFILTER, body, { op: 'RTM_DELTFILTER', object: describeFilter(f), hint: filterHint(undefined) });
}

export function decodeFilter(payload: Buffer): FilterInfo {
  const hdr = tcmsg.decode(payload);
  const attrs = tcaAttrs.decode(payload.subarray(tcmsg.size));
  const kind = attrs.kind ?? '';
  const info: FilterInfo = {
    ifindex: hdr.ifindex,
    parent: hdr.parent,
    prio: infoPrio(hdr.info),
    protocol: infoProtocol(hdr.info),
    handle: hdr.handle,
    kind,
    attrs,
  };
  if (attrs.options !== undefined) info.options = decodeOptionsOf(FILTER_KINDS, kind, attrs.options);
  const stats = statsFrom(attrs);
  if (stats) info.stats = stats;
  return info;
}

/** Lists the filters on a parent. Equivalent to: `tc -s filter show dev DEV parent P`. */
export async function listFilters(rt: Rtnl, dev: string | number, parent: number): Promise<FilterInfo[]> {
  const ifindex = await linkIndex(rt, dev);
  const replies = await rt.sock.dumpConsistent(RTM_GETTFILTER, tcmsg.encode({ ifindex, parent }), {
    op: 'RTM_GETTFILTER',
    object: `dev ${dev} parent ${formatHandle(parent)}`,
  });
  return replies.filter((m) => m.type === RTM_NEWTFILTER).map((m) => decodeFilter(m.payload));
}
