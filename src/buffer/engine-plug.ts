/**
 * The plug engine, for kernels with sch_plug (the kernel lab here): the filter's
 * packets go to an sch_plug qdisc, which holds them in the kernel; a step is
 * sch_plug's own epoch (BUFFER, then RELEASE_ONE: what was held before the new
 * BUFFER goes), release is RELEASE_INDEFINITE. Two topologies, as protect's:
 *
 * egress (default) - on the device's own transmit path:
 *
 *     dev DEV root  prio 5304: bands 4, default priomap -> bands 1..3 as before
 *                   └─ 5304:4  plug 5305:   (reached only through the filters)
 *     filters on 5304:  u32 <the flow, each direction> -> flowid 5304:4
 *
 *   A held packet is still in its socket's host queue, so TCP does not
 *   retransmit it (measured in the lab: TcpRetransSegs 0). Redirecting to an
 *   IFB instead (tried first) lets TCP retransmit every RTO: mirred hands the IFB
 *   a copy and the socket's own packet is freed. The price: the device's root
 *   qdisc becomes a prio (refused if somebody configured one, protect's plug
 *   setup on the same device included: then --backend nfqueue).
 *
 * ingress - packets arriving on DEV, held on an IFB (a qdisc holds only egress):
 *
 *     dev DEV  clsact (created if absent; an existing one is shared)
 *              ingress filters u32 <flow> -> mirred egress redirect dev synbufN
 *     dev synbufN (IFB)  root plug 5305:
 *
 * What it cannot do: list each packet (sch_plug keeps no list anyone can read:
 * it counts), release N packets or drop one (it releases whole epochs).
 *
 * The watchdog's release, on a socket of its own: RELEASE_INDEFINITE on the
 * plug, then the filters' deletion (RTM_DELTFILTER each), so nothing is steered
 * any more. The root prio (or the IFB and a clsact it created) stays until the
 * next start or `synhold buffer release` removes it (q<N>.plug.json says what).
 */
import { writeFileSync, readFileSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError } from '../model/config.js';
import { BusyError, RootQdiscInUseError } from '../model/errors.js';
import type { IpFamily } from '../model/prefix.js';
import { encodeMessage, NLM_F_ACK, NLM_F_REQUEST } from '../netlink/message.js';
import { NETLINK_ROUTE, NetlinkSocket } from '../netlink/socket.js';
import { Plug } from '../plug/plug.js';
import { addIfb, deleteLink, linkIndex, setLinkUp } from '../rtnl/link.js';
import { Rtnl } from '../rtnl/rtnl.js';
import { packAddress, packKey16, packKey8, type U32Key } from '../rtnl/tc/cls_u32.js';
import { addFilter, deleteFilter, encodeFilterDelete, listFilters } from '../rtnl/tc/filter.js';
import { makeHandle, TC_H_CLSACT, TC_H_INGRESS, TC_H_MIN_INGRESS, TC_H_ROOT } from '../rtnl/tc/handle.js';
import { DEFAULT_PRIOMAP } from '../rtnl/tc/sch_prio.js';
import { addQdisc, deleteQdisc, encodeQdiscRequest, listQdiscs } from '../rtnl/tc/qdisc.js';
import { ETH_P_IP, ETH_P_IPV6, RTM_DELTFILTER, RTM_NEWQDISC } from '../rtnl/tc/tcmsg.js';
import type { Fallback } from '../backends/backend.js';
import { flowsOf, type BufferFilter, type Flow } from './filter.js';
import type { BufferPaths } from './paths.js';
import type { BufferPlan } from './plan.js';
import type { BufferEngine, BufferHeld, StepOptions, StepResult } from './engine.js';

const PRIO_MAJOR = 0x5304;
const PLUG_HANDLE = makeHandle(0x5305, 0);
/** The plug's byte limit: room for a debugging session (past it the kernel drops, counted in tc -s). */
const PLUG_LIMIT = 16 * 1024 * 1024;
const IPPROTO = { tcp: 6, udp: 17 } as const;

export function ifbName(queue: number): string {
  return `synbuf${queue}`;
}

/** Filter priorities of their own, per buffer and family: out of the way of protect's (0xc001/2) and the user's. */
export function filterPrio(queue: number, family: IpFamily): number {
  return 0xc200 + ((queue % 0x800) << 1) + (family === 6 ? 1 : 0);
}

/** What a plug buffer created, so it (or the next start, or release) removes exactly that. */
interface PlugObjects {
  dev: string;
  /** Where the plug is: DEV's prio band (egress) or the IFB's root (ingress). */
  plug: { dev: string; parent: number };
  /** egress: the root prio on DEV is ours. */
  rootPrio: boolean;
  /** ingress: the IFB, and whether the clsact on DEV is ours. */
  ifb?: string;
  createdClsact: boolean;
  /** The filters' parent (the prio, or the clsact/ingress hook) and priorities. */
  parent: number;
  filters: { prio: number; protocol: number }[];
}

/**
 * u32 keys for one direction of the flow (tc's `match ip protocol 6 0xff match ip dport P 0xffff ...`).
 * IPv4 pins IHL=5 and the first fragment, as protect's SYN match does (cls_u32.ts): a packet with
 * IP options is not held (it passes, as if there were no buffer).
 */
export function flowKeys(f: BufferFilter, flow: Flow): U32Key[] {
  const keys: U32Key[] = [];
  const v4 = flow.family === 4;
  const l4 = v4 ? 20 : 40;
  packKey8(keys, IPPROTO[f.proto], 0xff, v4 ? 9 : 6);
  if (v4) {
    packKey8(keys, 0x05, 0x0f, 0);
    packKey16(keys, 0, 0x1fff, 6);
  }
  if (flow.src) packAddress(keys, flow.src, 'src');
  if (flow.dst) packAddress(keys, flow.dst, 'dst');
  if (flow.sport !== undefined) packKey16(keys, flow.sport, 0xffff, l4);
  if (flow.dport !== undefined) packKey16(keys, flow.dport, 0xffff, l4 + 2);
  if (f.tcpFlags) packKey8(keys, f.tcpFlags.set, f.tcpFlags.mask, l4 + 13);
  return keys;
}

function writeObjects(paths: BufferPaths, o: PlugObjects): void {
  writeFileSync(paths.plugState, `${JSON.stringify(o)}\n`, { mode: 0o600 });
}

/** The ingress hook the filters hang on: a clsact of ours, or the device's own ingress or clsact qdisc. */
async function ingressHook(rt: Rtnl, dev: string): Promise<{ parent: number; create: boolean }> {
  const hook = (await listQdiscs(rt, dev)).find((q) => q.parent === TC_H_INGRESS);
  if (!hook) return { parent: makeHandle(0xffff, TC_H_MIN_INGRESS), create: true };
  return { parent: hook.kind === 'clsact' ? makeHandle(0xffff, TC_H_MIN_INGRESS) : makeHandle(0xffff, 0), create: false };
}

/** egress: a root prio of ours on DEV, the plug in its fourth band. Refuses a configured root (somebody's policy). */
async function buildEgress(rt: Rtnl, plan: BufferPlan, o: PlugObjects): Promise<{ plug: Plug; target: { classid: number } }> {
  const dev = plan.filter.dev;
  const root = (await listQdiscs(rt, dev)).find((q) => q.parent === TC_H_ROOT);
  if (root && root.handle !== 0) {
    throw new RootQdiscInUseError(
      `dev ${dev} already has a configured root qdisc (${root.kind} ${(root.handle >>> 16).toString(16)}:); the plug buffer will not replace it - use --backend nfqueue or --at ingress`,
    );
  }
  o.parent = makeHandle(PRIO_MAJOR, 0);
  o.plug = { dev, parent: makeHandle(PRIO_MAJOR, 4) };
  writeObjects(plan.paths, o);
  await addQdisc(rt, { dev, parent: TC_H_ROOT, handle: o.parent, kind: 'prio', options: { bands: 4, priomap: DEFAULT_PRIOMAP } });
  o.rootPrio = true;
  writeObjects(plan.paths, o);
  const plug = new Plug(rt, { dev, parent: o.plug.parent, handle: PLUG_HANDLE });
  await plug.attach(PLUG_LIMIT);
  return { plug, target: { classid: makeHandle(PRIO_MAJOR, 4) } };
}

/** ingress: an IFB whose root is the plug, and a redirect from DEV's ingress hook. */
async function buildIngress(rt: Rtnl, plan: BufferPlan, o: PlugObjects): Promise<{ plug: Plug; target: { redirectTo: number } }> {
  const hook = await ingressHook(rt, plan.filter.dev);
  o.parent = hook.parent;
  o.ifb = ifbName(plan.queue);
  o.plug = { dev: o.ifb, parent: TC_H_ROOT };
  writeObjects(plan.paths, o);
  const ifb = await addIfb(rt, o.ifb);
  await setLinkUp(rt, o.ifb, true);
  const plug = new Plug(rt, { dev: ifb.index, parent: TC_H_ROOT, handle: PLUG_HANDLE });
  await plug.attach(PLUG_LIMIT);
  if (hook.create) {
    await addQdisc(rt, { dev: plan.filter.dev, parent: TC_H_CLSACT, handle: makeHandle(0xffff, 0), kind: 'clsact' });
    o.createdClsact = true;
    writeObjects(plan.paths, o);
  }
  return { plug, target: { redirectTo: ifb.index } };
}

export async function preparePlug(plan: BufferPlan): Promise<BufferEngine> {
  const rt = Rtnl.open(plan.netns ? { netns: plan.netns } : {});
  const f = plan.filter;
  const families = [...new Set(flowsOf(f).map((x) => x.family))];
  const o: PlugObjects = {
    dev: f.dev,
    plug: { dev: f.dev, parent: 0 },
    rootPrio: false,
    createdClsact: false,
    parent: 0,
    filters: families.map((family) => ({ prio: filterPrio(plan.queue, family), protocol: family === 4 ? ETH_P_IP : ETH_P_IPV6 })),
  };
  let spare: NetlinkSocket | undefined;
  try {
    await removePlugLeftovers(plan.paths, rt);
    const devIndex = await linkIndex(rt, f.dev);
    // Each step records what it is about to create first: a crash part way leaves a record of what may exist.
    const built = f.at === 'egress' ? await buildEgress(rt, plan, o) : await buildIngress(rt, plan, o);
    const taken = (await listFilters(rt, f.dev, o.parent)).filter((x) => o.filters.some((m) => m.prio === x.prio));
    if (taken.length) throw new BusyError(`dev ${f.dev} already has filters at priority ${taken[0]!.prio}: another buffer on queue ${plan.queue}?`);
    spare = NetlinkSocket.open(NETLINK_ROUTE, plan.netns ? { netns: plan.netns } : {});
    const plugIndex = o.ifb ? await linkIndex(rt, o.ifb) : devIndex;
    const fallback = watchdogRelease(spare, plugIndex, devIndex, o);
    return new PlugEngine(plan, rt, built.plug, built.target, o, spare, fallback);
  } catch (e) {
    spare?.close();
    await removePlugLeftovers(plan.paths, rt).catch(() => undefined);
    rt.close();
    throw e;
  }
}

/** RELEASE_INDEFINITE, then each filter's deletion: whole requests, for the watchdog to send on `spare`. */
function watchdogRelease(spare: NetlinkSocket, plugIndex: number, devIndex: number, o: PlugObjects): Fallback {
  const flags = NLM_F_REQUEST | NLM_F_ACK;
  const release = encodeQdiscRequest(plugIndex, { parent: o.plug.parent, handle: PLUG_HANDLE, kind: 'plug', options: { action: 'release_indefinite' } });
  const messages = [encodeMessage({ type: RTM_NEWQDISC, flags, seq: spare.reserveSeq(), payload: release })];
  for (const x of o.filters) {
    const payload = encodeFilterDelete(devIndex, { parent: o.parent, prio: x.prio, protocol: x.protocol });
    messages.push(encodeMessage({ type: RTM_DELTFILTER, flags, seq: spare.reserveSeq(), payload }));
  }
  return { sockets: [spare.fd], messages: messages.map((bytes) => ({ socket: 0, bytes })), commands: [], relayAcks: (l) => spare.onReservedAck(l) };
}

class PlugEngine implements BufferEngine {
  readonly backend = 'plug' as const;

  constructor(
    private readonly plan: BufferPlan,
    private readonly rt: Rtnl,
    private readonly plug: Plug,
    private readonly target: { classid: number } | { redirectTo: number },
    private readonly o: PlugObjects,
    private readonly spare: NetlinkSocket,
    readonly fallback: Fallback,
  ) {}

  /** Hold first, then steer: everything the filters pick from here on is held. */
  async start(): Promise<void> {
    await this.plug.buffer();
    const f = this.plan.filter;
    for (const flow of flowsOf(f)) {
      const m = this.o.filters.find((x) => x.protocol === (flow.family === 4 ? ETH_P_IP : ETH_P_IPV6))!;
      const keys = flowKeys(f, flow);
      const options =
        'classid' in this.target
          ? { keys, classid: this.target.classid }
          : { keys, actions: [{ kind: 'mirred', options: { eaction: 'egress_redirect', ifindex: this.target.redirectTo } }] };
      await addFilter(this.rt, { dev: f.dev, parent: this.o.parent, prio: m.prio, protocol: m.protocol, kind: 'u32', options });
    }
  }

  async list(): Promise<BufferHeld> {
    const s = await this.plug.stats();
    return { heldPackets: s.heldPackets, heldBytes: s.heldBytes };
  }

  /** sch_plug's epoch: BUFFER starts a new one, RELEASE_ONE lets the previous one (everything held so far) go. */
  async step(o: StepOptions): Promise<StepResult> {
    if (o.count !== undefined || o.drop) {
      throw new ConfigError(
        'the plug backend releases whole epochs only (sch_plug counts, it cannot pick packets): step without --count/--drop, or --backend nfqueue',
      );
    }
    const before = await this.plug.stats();
    await this.plug.buffer();
    await this.plug.releaseOne();
    const after = await this.plug.stats();
    return { released: before.heldPackets, dropped: 0, ids: [], held: after.heldPackets };
  }

  async releaseAll(): Promise<number> {
    const before = await this.plug.stats();
    await this.plug.releaseIndefinite();
    await this.drained();
    return before.heldPackets;
  }

  /** Deleting a plug drops what it holds: wait (bounded) until the release has left it. */
  private async drained(): Promise<void> {
    for (let i = 0; i < 200; i++) {
      const s = await this.plug.stats().catch(() => undefined);
      if (!s || s.heldPackets === 0) return;
      await sleep(5);
    }
  }

  async removeSteering(): Promise<void> {
    await removePlugLeftovers(this.plan.paths, this.rt);
  }

  async afterWatchdog(): Promise<number> {
    await this.drained();
    await this.removeSteering().catch(() => undefined);
    return 0;
  }

  close(): void {
    this.spare.close();
    this.rt.close();
  }
}

function ignoreGone(e: unknown): void {
  // Already gone is what removal wants (ENOENT, ENODEV, EINVAL for a filter on a gone hook).
  const errno = (e as { errno?: number }).errno;
  if (errno === 2 || errno === 19 || errno === 22) return;
  throw e;
}

/**
 * Removes what a plug buffer created (its record says what): release the plug
 * first (deleting it would drop what it holds), the filters, a clsact it
 * created, the IFB. Returns how many objects it found to remove.
 */
export async function removePlugLeftovers(paths: BufferPaths, rt: Rtnl): Promise<number> {
  let o: PlugObjects;
  try {
    o = JSON.parse(readFileSync(paths.plugState, 'utf8')) as PlugObjects;
  } catch {
    return 0;
  }
  let n = 0;
  if (o.plug?.parent) {
    const plug = new Plug(rt, { dev: o.plug.dev, parent: o.plug.parent, handle: PLUG_HANDLE });
    if (await plug.stats().catch(() => undefined)) {
      await plug.releaseIndefinite();
      for (let i = 0; i < 200 && (await plug.stats()).heldPackets > 0; i++) await sleep(5);
    }
  }
  if (o.parent) {
    for (const x of o.filters) await deleteFilter(rt, { dev: o.dev, parent: o.parent, prio: x.prio, protocol: x.protocol }).then(() => n++, ignoreGone);
  }
  if (o.rootPrio) await deleteQdisc(rt, { dev: o.dev, parent: TC_H_ROOT, handle: makeHandle(PRIO_MAJOR, 0) }).then(() => n++, ignoreGone);
  if (o.createdClsact) await deleteQdisc(rt, { dev: o.dev, parent: TC_H_CLSACT }).then(() => n++, ignoreGone);
  if (o.ifb) await deleteLink(rt, o.ifb).then(() => n++, ignoreGone);
  rmSync(paths.plugState, { force: true });
  return n;
}
