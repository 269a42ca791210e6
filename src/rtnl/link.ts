/**
 * Network links (include/uapi/linux/rtnetlink.h, if_link.h): index lookup by
 * name, and creating, raising and deleting the IFB device that carries the
 * plug for ingress protection.
 */
import { BadDeviceError, KernelReplyError } from '../model/errors.js';
import { NetlinkError } from '../netlink/errors.js';
import { NLM_F_CREATE, NLM_F_EXCL } from '../netlink/message.js';
import { defineAttributes, defineStruct } from '../netlink/schema.js';
import type { Rtnl } from './rtnl.js';

export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_SETLINK = 19;

export const IFF_UP = 0x1;
export const IFF_LOOPBACK = 0x8;
export const IFNAMSIZ = 16;

/** struct ifinfomsg */
export const ifinfomsg = defineStruct('ifinfomsg', [
  ['family', 'u8'],
  ['pad', 'u8'],
  ['type', 'u16'],
  ['index', 's32'],
  ['flags', 'u32'],
  ['change', 'u32'],
] as const);

/** IFLA_INFO_* nested in IFLA_LINKINFO */
export const iflaLinkInfo = defineAttributes('ifla_info', {
  // iproute2 sends the kind without a NUL; the kernel accepts both.
  kind: { type: 1, kind: 'string', noNul: true },
  data: { type: 2, kind: 'binary' },
  xstats: { type: 3, kind: 'binary' },
  slaveKind: { type: 4, kind: 'string' },
  slaveData: { type: 5, kind: 'binary' },
});

/** IFLA_INET6_* nested in IFLA_AF_SPEC's AF_INET6 (include/uapi/linux/if_link.h) */
export const iflaInet6 = defineAttributes('ifla_inet6', {
  addrGenMode: { type: 8, kind: 'u8' },
});
/** IN6_ADDR_GEN_MODE_NONE: no link-local address, so no DAD, router or MLD solicitations from the device. */
export const IN6_ADDR_GEN_MODE_NONE = 1;
const AF_INET6 = 10;

/** IFLA_AF_SPEC: per address family, nested by family number */
export const iflaAfSpec = defineAttributes('ifla_af_spec', {
  inet6: { type: AF_INET6, kind: 'nested', set: () => iflaInet6 },
});

/** IFLA_* (only what synhold reads or writes; the rest survives as raw bytes) */
export const iflaAttrs = defineAttributes('ifla', {
  address: { type: 1, kind: 'binary' },
  ifname: { type: 3, kind: 'string' },
  mtu: { type: 4, kind: 'u32' },
  link: { type: 5, kind: 'u32' },
  qdisc: { type: 6, kind: 'string' },
  txqlen: { type: 13, kind: 'u32' },
  operstate: { type: 16, kind: 'u8' },
  linkinfo: { type: 18, kind: 'nested', set: () => iflaLinkInfo },
  afSpec: { type: 26, kind: 'nested', set: () => iflaAfSpec },
  group: { type: 27, kind: 'u32' },
});

export interface LinkInfo {
  index: number;
  name: string;
  flags: number;
  up: boolean;
  mtu?: number;
  /** IFLA_INFO_KIND: `ifb`, `veth`, ... (absent for lo and physical devices). */
  kind?: string;
  /** The root qdisc's kind as the kernel names it (`noqueue`, `prio`, ...). */
  qdisc?: string;
}

function validateName(name: string): void {
  if (name.length === 0 || Buffer.byteLength(name) >= IFNAMSIZ || /[\s/:]/.test(name)) {
    throw new BadDeviceError(`"${name}" is not a valid interface name (1-15 bytes, no spaces, '/' or ':')`);
  }
}

function toLinkInfo(payload: Buffer): LinkInfo {
  const hdr = ifinfomsg.decode(payload);
  const a = iflaAttrs.decode(payload.subarray(ifinfomsg.size));
  const info: LinkInfo = { index: hdr.index, name: a.ifname ?? '', flags: hdr.flags, up: (hdr.flags & IFF_UP) !== 0 };
  if (a.mtu !== undefined) info.mtu = a.mtu;
  if (a.linkinfo?.kind !== undefined) info.kind = a.linkinfo.kind;
  if (a.qdisc !== undefined) info.qdisc = a.qdisc;
  return info;
}

const noDevice = (name: string) => (e: NetlinkError) => (e.errno === 19 ? `no network interface named "${name}" here (see \`ip link\`)` : undefined);

/**
 * Looks a link up by name. Equivalent to: `ip link show dev NAME`.
 * Throws NetlinkError ENODEV with a hint when there is none.
 */
export async function getLink(rt: Rtnl, name: string): Promise<LinkInfo> {
  validateName(name);
  const body = Buffer.concat([ifinfomsg.encode({}), iflaAttrs.encode({ ifname: name })]);
  const replies = await rt.sock.request(RTM_GETLINK, body, { op: 'RTM_GETLINK', object: `dev ${name}`, hint: noDevice(name) });
  const m = replies.find((r) => r.type === RTM_NEWLINK);
  if (!m) throw new KernelReplyError(`RTM_GETLINK dev ${name}: the kernel sent no link`);
  return toLinkInfo(m.payload);
}

/** The interface index of NAME (numbers pass through). Equivalent to: `ip -j link show dev NAME | jq .[0].ifindex`. */
export async function linkIndex(rt: Rtnl, dev: string | number): Promise<number> {
  if (typeof dev === 'number') return dev;
  return (await getLink(rt, dev)).index;
}

/** All links. Equivalent to: `ip link show`. */
export async function listLinks(rt: Rtnl): Promise<LinkInfo[]> {
  const replies = await rt.sock.dumpConsistent(RTM_GETLINK, ifinfomsg.encode({}), { op: 'RTM_GETLINK' });
  return replies.filter((r) => r.type === RTM_NEWLINK).map((r) => toLinkInfo(r.payload));
}

/** The RTM_NEWLINK body that creates an IFB device. */
export function encodeNewIfb(name: string): Buffer {
  validateName(name);
  return Buffer.concat([ifinfomsg.encode({}), iflaAttrs.encode({ ifname: name, linkinfo: { kind: 'ifb' } })]);
}

/**
 * Creates an IFB device that sends nothing of its own. Equivalent to: `ip link add NAME type ifb`
 * and `ip link set dev NAME addrgenmode none`. Fails with EEXIST if it exists.
 *
 * Why addrgenmode none: an IFB device is an Ethernet-type device, so once up, IPv6 gives it a
 * link-local address and it sends DAD, MLD and router solicitations out of itself, through its
 * root qdisc, which is synhold's plug: they were held with the SYNs, counted as held packets and
 * taken for a held SYN by anyone reading the plug's queue (measured in the kernel lab: 2 packets
 * in the first 6 s after `up`; none with addrgenmode none).
 */
export async function addIfb(rt: Rtnl, name: string): Promise<LinkInfo> {
  const body = encodeNewIfb(name);
  await rt.sock.request(RTM_NEWLINK, body, {
    op: 'RTM_NEWLINK',
    object: `dev ${name} type ifb`,
    flags: NLM_F_CREATE | NLM_F_EXCL,
    hint: (e) =>
      e.errno === 95 || (e.errno === 22 && /kind/i.test(e.kernelMessage ?? ''))
        ? { text: 'this kernel lacks IFB (CONFIG_IFB / module ifb)', lacks: 'ifb' as const }
        : e.errno === 17
          ? `a device named ${name} already exists`
          : undefined,
  });
  const link = await getLink(rt, name);
  // Not left half made: a device that would talk through the plug is deleted again.
  await setAddrGenModeNone(rt, link.index).catch(async (e: unknown) => {
    await deleteLink(rt, link.index).catch(() => undefined);
    throw e;
  });
  return link;
}

/** Equivalent to: `ip link set dev INDEX addrgenmode none`; a kernel without IPv6 (EAFNOSUPPORT) has nothing to turn off. */
export async function setAddrGenModeNone(rt: Rtnl, index: number): Promise<void> {
  const body = Buffer.concat([ifinfomsg.encode({ index }), iflaAttrs.encode({ afSpec: { inet6: { addrGenMode: IN6_ADDR_GEN_MODE_NONE } } })]);
  await rt.sock.request(RTM_NEWLINK, body, { op: 'RTM_NEWLINK', object: `dev ${index} addrgenmode none` }).catch((e: unknown) => {
    if (!(e instanceof NetlinkError && e.errno === 97)) throw e;
  });
}

/** Sets a link up or down. Equivalent to: `ip link set dev NAME up|down`. */
export async function setLinkUp(rt: Rtnl, dev: string | number, up: boolean): Promise<void> {
  const index = await linkIndex(rt, dev);
  const body = ifinfomsg.encode({ index, flags: up ? IFF_UP : 0, change: IFF_UP });
  await rt.sock.request(RTM_NEWLINK, body, { op: 'RTM_NEWLINK', object: `dev ${dev} ${up ? 'up' : 'down'}` });
}

/** Deletes a link. Equivalent to: `ip link del dev NAME`. */
export async function deleteLink(rt: Rtnl, dev: string | number): Promise<void> {
  const index = await linkIndex(rt, dev);
  await rt.sock.request(RTM_DELLINK, ifinfomsg.encode({ index }), { op: 'RTM_DELLINK', object: `dev ${dev}` });
}
