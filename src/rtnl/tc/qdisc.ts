/**
 * Qdisc operations over rtnetlink, whatever the kind: each kind's options go
 * through its own module, found in a plain map by name.
 */
import { UnknownKindError } from '../../model/errors.js';
import { NetlinkError, type ErrorHint } from '../../netlink/errors.js';
import { NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE } from '../../netlink/message.js';
import { linkIndex } from '../link.js';
import type { Rtnl } from '../rtnl.js';
import { formatHandle, TC_H_INGRESS, TC_H_ROOT } from './handle.js';
import { decodeOptionsOf, type TcKind } from './kind.js';
import { schClsact, schIngress } from './sch_ingress.js';
import { schBfifo, schPfifo } from './sch_fifo.js';
import { schPlug } from './sch_plug.js';
import { schPrio } from './sch_prio.js';
import { AF_UNSPEC, RTM_DELQDISC, RTM_GETQDISC, RTM_NEWQDISC, statsFrom, tcaAttrs, tcmsg, type TcaValues, type TcStats } from './tcmsg.js';

/** The kinds synhold can encode; others still decode, with raw options. */
export const QDISC_KINDS: ReadonlyMap<string, TcKind<never>> = new Map<string, TcKind<never>>(
  [schPlug, schPrio, schPfifo, schBfifo, schIngress, schClsact].map((k) => [k.kind, k as TcKind<never>]),
);

export interface QdiscRef {
  dev: string | number;
  /** TC_H_ROOT, TC_H_INGRESS, or a class such as 1:4. */
  parent: number;
  /** 0 lets the kernel choose (for add) or matches any (for delete by parent). */
  handle?: number;
}

export interface QdiscSpec<O = unknown> extends QdiscRef {
  kind: string;
  options?: O;
}

export interface QdiscInfo {
  ifindex: number;
  handle: number;
  parent: number;
  kind: string;
  /** Decoded by the kind's module; `{ raw }` hex for kinds synhold does not model. */
  options?: unknown;
  stats?: TcStats;
  /** Every attribute as decoded, unknown ones kept raw. */
  attrs: TcaValues;
}

export function describeQdisc(r: QdiscRef & { kind?: string }): string {
  const parts = [`dev ${r.dev}`, r.parent === TC_H_ROOT ? 'root' : r.parent === TC_H_INGRESS ? 'ingress' : `parent ${formatHandle(r.parent)}`];
  if (r.handle) parts.push(`handle ${formatHandle(r.handle)}`);
  if (r.kind) parts.push(`kind ${r.kind}`);
  return parts.join(' ');
}

/** Hints for the errors people actually hit when creating qdiscs. */
function qdiscHint(kind: string | undefined): (e: NetlinkError) => ErrorHint | undefined {
  return (e) => {
    const text = e.kernelMessage ?? '';
    if ((e.errno === 2 || e.errno === 22) && /kind is unknown/i.test(text)) {
      const fact = `this kernel lacks the ${kind ?? 'requested'} qdisc (CONFIG_NET_SCH_${(kind ?? '').toUpperCase()})`;
      return kind === 'plug'
        ? { text: 'this kernel lacks sch_plug (CONFIG_NET_SCH_PLUG)', lacks: 'sch_plug' }
        : kind === 'prio'
          ? { text: fact, lacks: 'sch_prio' }
          : fact;
    }
    if (e.errno === 17) return 'a qdisc already exists there; delete it first or choose another handle';
    if (e.errno === 1) return 'needs root (CAP_NET_ADMIN)';
    if (e.errno === 19) return 'no such device';
    return undefined;
  };
}

function encodeOptions(kind: string, options: unknown): Buffer | undefined {
  const k = QDISC_KINDS.get(kind);
  if (!k) {
    if (options === undefined) return undefined;
    throw new UnknownKindError(`synhold cannot encode options for qdisc kind "${kind}"`);
  }
  return options === undefined && kind !== 'ingress' && kind !== 'clsact' ? undefined : k.encodeOptions(options as never);
}

/** The RTM_NEWQDISC body (struct tcmsg + attributes) for a device already resolved to its index. */
export function encodeQdiscRequest(ifindex: number, s: Omit<QdiscSpec, 'dev'>): Buffer {
  const attrs: TcaValues = { kind: s.kind };
  const opts = encodeOptions(s.kind, s.options);
  if (opts !== undefined) attrs.options = opts;
  return Buffer.concat([tcmsg.encode({ family: AF_UNSPEC, ifindex, handle: s.handle ?? 0, parent: s.parent }), tcaAttrs.encode(attrs)]);
}

async function qdiscMessage(rt: Rtnl, s: QdiscSpec): Promise<Buffer> {
  return encodeQdiscRequest(await linkIndex(rt, s.dev), s);
}

/** The RTM_DELQDISC body. */
export function encodeQdiscDelete(ifindex: number, r: Omit<QdiscRef, 'dev'>): Buffer {
  return tcmsg.encode({ family: AF_UNSPEC, ifindex, handle: r.handle ?? 0, parent: r.parent });
}

/** Creates a qdisc; fails with EEXIST if one is there. Equivalent to: `tc qdisc add dev DEV parent P handle H KIND OPTIONS`. */
export async function addQdisc(rt: Rtnl, s: QdiscSpec): Promise<void> {
  await rt.sock.request(RTM_NEWQDISC, await qdiscMessage(rt, s), {
    op: 'RTM_NEWQDISC',
    object: describeQdisc(s),
    flags: NLM_F_CREATE | NLM_F_EXCL,
    hint: qdiscHint(s.kind),
  });
}

/** Creates or replaces. Equivalent to: `tc qdisc replace dev DEV parent P handle H KIND OPTIONS`. */
export async function replaceQdisc(rt: Rtnl, s: QdiscSpec): Promise<void> {
  await rt.sock.request(RTM_NEWQDISC, await qdiscMessage(rt, s), {
    op: 'RTM_NEWQDISC',
    object: describeQdisc(s),
    flags: NLM_F_CREATE | NLM_F_REPLACE,
    hint: qdiscHint(s.kind),
  });
}

/** Changes an existing qdisc's options. Equivalent to: `tc qdisc change dev DEV parent P handle H KIND OPTIONS`. */
export async function changeQdisc(rt: Rtnl, s: QdiscSpec): Promise<void> {
  await rt.sock.request(RTM_NEWQDISC, await qdiscMessage(rt, s), {
    op: 'RTM_NEWQDISC',
    object: describeQdisc(s),
    hint: qdiscHint(s.kind),
  });
}

/** Deletes the qdisc at parent (and handle, if given). Equivalent to: `tc qdisc del dev DEV parent P [handle H]`. */
export async function deleteQdisc(rt: Rtnl, r: QdiscRef & { kind?: string }): Promise<void> {
  const body = encodeQdiscDelete(await linkIndex(rt, r.dev), r);
  await rt.sock.request(RTM_DELQDISC, body, { op: 'RTM_DELQDISC', object: describeQdisc(r), hint: qdiscHint(r.kind) });
}

export function decodeQdisc(payload: Buffer): QdiscInfo {
  const hdr = tcmsg.decode(payload);
  const attrs = tcaAttrs.decode(payload.subarray(tcmsg.size));
  const kind = attrs.kind ?? '';
  const info: QdiscInfo = { ifindex: hdr.ifindex, handle: hdr.handle, parent: hdr.parent, kind, attrs };
  if (attrs.options !== undefined) info.options = decodeOptionsOf(QDISC_KINDS, kind, attrs.options);
  const stats = statsFrom(attrs);
  if (stats) info.stats = stats;
  return info;
}

/**
 * Lists qdiscs with their statistics. Equivalent to: `tc -s qdisc show [dev DEV]`.
 * The kernel's qdisc dump ignores tcm_ifindex (KERNEL.md), so the device filter is applied here.
 */
export async function listQdiscs(rt: Rtnl, dev?: string | number): Promise<QdiscInfo[]> {
  const ifindex = dev === undefined ? undefined : await linkIndex(rt, dev);
  const replies = await rt.sock.dumpConsistent(RTM_GETQDISC, tcmsg.encode({ ifindex: ifindex ?? 0 }), {
    op: 'RTM_GETQDISC',
    object: dev === undefined ? undefined : `dev ${dev}`,
  });
  const all = replies.filter((m) => m.type === RTM_NEWQDISC).map((m) => decodeQdisc(m.payload));
  return ifindex === undefined ? all : all.filter((q) => q.ifindex === ifindex);
}

/** The qdisc with this handle on DEV, or undefined. */
export async function findQdisc(rt: Rtnl, dev: string | number, handle: number): Promise<QdiscInfo | undefined> {
  return (await listQdiscs(rt, dev)).find((q) => q.handle === handle);
}
