/**
 * The plug backend: new SYNs are steered into an sch_plug qdisc, which holds
 * them in the kernel and lets them go on release. Nothing is lost and the
 * client never retransmits: a held connection waits exactly as long as the hold.
 *
 * Two topologies:
 *
 * egress, `--egress-topology prio` (clients on this host, e.g. SmartStack on lo) - the seed's:
 *
 *     dev lo root  prio 5301: bands 4, default priomap -> bands 1..3 as before
 *                  └─ 5301:4  plug 5302:   (reached only through the filters)
 *     filters on 5301:  u32 "SYN, not ACK, to a protected port" -> flowid 5301:4
 *
 *   What it does to other traffic: lo's default root (noqueue: no queue at all)
 *   becomes a prio qdisc, so every loopback packet takes the qdisc lock and is
 *   queued in one of three pfifo bands exactly as pfifo_fast would map it. On lo
 *   the queue drains at once, so nothing waits, but it is a root lock on a path
 *   that had none. The two topologies below touch nothing but matching SYNs.
 *
 * egress, `--egress-topology clsact` (what the default, auto, builds when it can) - the same
 * clients, without touching the root:
 *
 *     dev lo  clsact (or an existing clsact qdisc is reused)
 *             egress filter u32 "SYN, not ACK, to a protected port" -> mirred egress redirect dev synhold-ifbN
 *     dev synhold-ifbN (IFB)  root plug 5302:
 *
 *   lo keeps its noqueue root, so other loopback packets take no qdisc lock; they
 *   cross the clsact egress hook (an RCU list walk, two u32 filters that do not
 *   match) instead. On release the IFB device sends held SYNs on through lo's
 *   transmit path, past the hook (the IFB marks them to skip classification).
 *
 * ingress (clients elsewhere: external load balancers) - what the seed named
 * as its unsolved drawback, since a qdisc can only hold egress traffic:
 *
 *     dev eth0  clsact (or an existing ingress/clsact qdisc is reused)
 *               ingress filter u32 "SYN to a protected port" -> mirred egress redirect dev synhold-ifbN
 *     dev synhold-ifbN (IFB)  root plug 5302:
 *
 *   The IFB device sends held packets back into eth0's receive path on release.
 *   Only matching SYNs are redirected; all other traffic is untouched.
 */
import { BackendUnavailableError, ConfigError, FilterPrioInUseError, RootQdiscInUseError, SteeringGoneError } from '../model/errors.js';
import { NetlinkError } from '../netlink/errors.js';
import { addIfb, deleteLink, getLink, linkIndex, setLinkUp } from '../rtnl/link.js';
import { encodeMessage, NLM_F_ACK, NLM_F_REQUEST } from '../netlink/message.js';
import { NETLINK_ROUTE, NetlinkSocket } from '../netlink/socket.js';
import { addFilter, deleteFilter, listFilters } from '../rtnl/tc/filter.js';
import { TC_H_CLSACT, TC_H_INGRESS, TC_H_MIN_EGRESS, TC_H_MIN_INGRESS, TC_H_ROOT, formatHandle, makeHandle } from '../rtnl/tc/handle.js';
import { addQdisc, deleteQdisc, encodeQdiscRequest, listQdiscs, type QdiscInfo } from '../rtnl/tc/qdisc.js';
import { synMatchKeys } from '../rtnl/tc/cls_u32.js';
import { DEFAULT_PRIOMAP } from '../rtnl/tc/sch_prio.js';
import { ETH_P_IP, ETH_P_IPV6, RTM_NEWQDISC } from '../rtnl/tc/tcmsg.js';
import { Plug, plugStatsFrom, type PlugRef } from '../plug/plug.js';
import type { SetupConfig } from '../model/config.js';
import { synMatches, type SynMatch } from '../model/syn-match.js';
import { fault } from '../model/inject.js';
import { atomically, markHoldMayBeOn, type BackendContext, type HoldBackend, type HoldCounters, type ProbeResult } from './backend.js';

export const PRIO_MAJOR = 0x5301;
export const PLUG_MAJOR = 0x5302;
/** Filter priorities on a shared clsact/ingress hook: high numbers, out of the way of the user's own. */
export const HOOK_PRIO_V4 = 0xc001;
export const HOOK_PRIO_V6 = 0xc002;

/** An egress topology as built (--egress-topology auto resolved). */
export type BuiltTopology = 'prio' | 'clsact';

export interface FilterRecord {
  dev: string;
  parent: number;
  prio: number;
  protocol: number;
}

export interface PlugState {
  direction: 'egress' | 'ingress';
  /** Egress only: how SYNs reach the plug (absent in records made before clsact existed: prio). */
  topology?: BuiltTopology;
  /** Egress, --egress-topology auto: why setup built this one. */
  topologyReason?: string;
  dev: string;
  plug: { dev: string; parent: number; handle: number };
  /** Exactly what setup created, so teardown removes that and nothing else. */
  created: {
    rootPrio?: { dev: string };
    hook?: { dev: string; kind: 'clsact' };
    ifb?: string;
    filters: FilterRecord[];
  };
  /** The root qdisc's kind before setup, for teardown's restore check. */
  previousRoot?: string;
  /** Redirect topologies: when the filters are on the hook (absent in records made before the option: always). */
  steering?: 'always' | 'while-holding';
  /** With --steering auto: why setup chose this one. */
  steeringReason?: string;
  /** Steering while-holding: the filters each hold adds to the hook and its release deletes. */
  holdFilters?: {
    dev: string;
    parent: number;
    prios: { v4: number; v6: number };
    matches: SynMatch[];
    /** The hold adds the clsact hook itself too, and its release deletes it (setup made it: nobody else's). */
    hook?: boolean;
  };
}

function ifbName(ifindex: number): string {
  return `synhold-ifb${ifindex}`.slice(0, 15);
}

function plugRef(s: PlugState): PlugRef {
  return { dev: s.plug.dev, parent: s.plug.parent, handle: s.plug.handle };
}

async function addSynFilters(
  ctx: BackendContext,
  matches: readonly SynMatch[],
  dev: string | number,
  parent: number,
  prios: { v4: number; v6: number },
  target: { classid: number } | { redirectTo: number },
): Promise<FilterRecord[]> {
  const records: FilterRecord[] = [];
  for (const t of matches) {
    const protocol = t.family === 4 ? ETH_P_IP : ETH_P_IPV6;
    const prio = t.family === 4 ? prios.v4 : prios.v6;
    const keys = synMatchKeys(t);
    const options =
      'classid' in target
        ? { keys, classid: target.classid }
        : { keys, actions: [{ kind: 'mirred', options: { eaction: 'egress_redirect', ifindex: target.redirectTo } }] };
    await addFilter(ctx.rt, { dev, parent, prio, protocol, kind: 'u32', options });
    if (!records.some((r) => r.prio === prio)) records.push({ dev: String(dev), parent, prio, protocol });
  }
  return records;
}

async function installEgress(cfg: SetupConfig, ctx: BackendContext): Promise<PlugState> {
  // normalizeConfig refuses this for --backend plug; with --backend auto it is known only now that plug was chosen.
  if (cfg.steering === 'while-holding') {
    throw new ConfigError(
      "--steering while-holding needs the plug backend's redirect topology (--egress-topology clsact or auto, or --direction ingress): the prio topology's cost is lo's root qdisc, which stays between holds whatever its filters do",
    );
  }
  const root = (await listQdiscs(ctx.rt, cfg.dev)).find((q) => q.parent === TC_H_ROOT);
  // A root with handle 0: is the kernel's default (noqueue, pfifo_fast, mq...):
  // replacing it loses nothing and deleting ours brings it back. A configured
  // root is somebody's traffic policy; synhold will not replace it.
  if (root && root.handle !== 0) {
    throw new RootQdiscInUseError(
      `dev ${cfg.dev} already has a configured root qdisc (${root.kind} ${formatHandle(root.handle)}); ` +
        'synhold will not replace it - remove it, or use --direction ingress or --backend nfqueue',
    );
  }
  return atomically(async (undo) => {
    const prioHandle = makeHandle(PRIO_MAJOR, 0);
    await addQdisc(ctx.rt, {
      dev: cfg.dev,
      parent: TC_H_ROOT,
      handle: prioHandle,
      kind: 'prio',
      options: { bands: 4, priomap: DEFAULT_PRIOMAP },
    });
    undo.push('root prio', () => deleteQdisc(ctx.rt, { dev: cfg.dev, parent: TC_H_ROOT }));
    const state: PlugState = {
      direction: 'egress',
      dev: cfg.dev,
      topology: 'prio',
      plug: { dev: cfg.dev, parent: makeHandle(PRIO_MAJOR, 4), handle: makeHandle(PLUG_MAJOR, 0) },
      created: { rootPrio: { dev: cfg.dev }, filters: [] },
    };
    if (root) state.previousRoot = root.kind;
    // Deleting the root prio takes the plug and the filters with it.
    await new Plug(ctx.rt, plugRef(state)).attach(cfg.limit);
    state.created.filters = await addSynFilters(ctx, synMatches(cfg), cfg.dev, prioHandle, { v4: 1, v6: 2 }, { classid: makeHandle(PRIO_MAJOR, 4) });
    return state;
  });
}

/**
 * The redirect topologies: matching SYNs are redirected from the device's clsact
 * hook (`side`: ingress, or egress for `--egress-topology clsact`) to an IFB
 * device whose root is the plug. The device's own root qdisc is never touched.
 */
async function installRedirect(cfg: SetupConfig, ctx: BackendContext, side: 'ingress' | 'egress'): Promise<PlugState> {
  const link = await getLink(ctx.rt, cfg.dev);
  const ifb = ifbName(link.index);
  const hook = (await listQdiscs(ctx.rt, cfg.dev)).find((q) => q.parent === TC_H_INGRESS);
  // An `ingress` qdisc has no egress hook, and clsact cannot be added beside it.
  if (side === 'egress' && hook && hook.kind !== 'clsact') {
    throw new RootQdiscInUseError(
      `dev ${cfg.dev} has an ${hook.kind} qdisc, which has no egress hook; --egress-topology clsact needs clsact there ` +
        '(replace it with clsact, or use --egress-topology prio)',
    );
  }
  return atomically(async (undo) => {
    const ifbLink = await addIfb(ctx.rt, ifb);
    undo.push(`ifb ${ifb}`, () => deleteLink(ctx.rt, ifb));
    await setLinkUp(ctx.rt, ifb, true);
    const state: PlugState = {
      direction: side,
      dev: cfg.dev,
      plug: { dev: ifb, parent: TC_H_ROOT, handle: makeHandle(PLUG_MAJOR, 0) },
      created: { ifb, filters: [] },
    };
    if (side === 'egress') state.topology = 'clsact';
    await new Plug(ctx.rt, plugRef(state)).attach(cfg.limit);

    const minor = side === 'ingress' ? TC_H_MIN_INGRESS : TC_H_MIN_EGRESS;
    let parent: number;
    if (!hook) {
      await addQdisc(ctx.rt, { dev: cfg.dev, parent: TC_H_CLSACT, handle: makeHandle(0xffff, 0), kind: 'clsact' });
      undo.push('clsact', () => deleteQdisc(ctx.rt, { dev: cfg.dev, parent: TC_H_CLSACT }));
      state.created.hook = { dev: cfg.dev, kind: 'clsact' };
      parent = makeHandle(0xffff, minor);
    } else {
      // Somebody's ingress or clsact qdisc: hang our filters on it at priorities of our own.
      parent = hook.kind === 'clsact' ? makeHandle(0xffff, minor) : makeHandle(0xffff, 0);
      const taken = (await listFilters(ctx.rt, cfg.dev, parent)).filter((f) => f.prio === HOOK_PRIO_V4 || f.prio === HOOK_PRIO_V6);
      if (taken.length) {
        throw new FilterPrioInUseError(`dev ${cfg.dev} already has ${side} filters at priorities ${HOOK_PRIO_V4}/${HOOK_PRIO_V6}; is synhold already set up?`);
      }
    }
    const prios = { v4: HOOK_PRIO_V4, v6: HOOK_PRIO_V6 };
    const matches = synMatches(cfg);
    try {
      state.created.filters = await addSynFilters(ctx, matches, cfg.dev, parent, prios, { redirectTo: ifbLink.index });
    } catch (e) {
      if (!state.created.hook) {
        for (const prio of [prios.v4, prios.v6]) await deleteFilter(ctx.rt, { dev: cfg.dev, parent, prio }).catch(() => undefined);
      }
      throw e;
    }
    // On somebody's hook the filters outlive the IFB's undo: if a later step fails they must go
    // too, or they would redirect SYNs to a deleted device (mirred drops them).
    if (!state.created.hook) undo.push('filters', async () => void (await deleteHookFilters(ctx, { dev: cfg.dev, parent, prios })));
    if (cfg.steering !== 'always') {
      // While holding: the filters just added proved this kernel takes them (cls_u32, act_mirred);
      // they go now and come back for each hold only, with the clsact hook when setup made it (a hook
      // somebody else had stays, with their filters). On this project's kernel the filters cost 5% of
      // new connections on lo, and the hook alone about 1% (docs/STEADY-STATE.md); between holds the
      // device then has exactly the qdiscs it had before setup.
      const hookOwned = Boolean(state.created.hook);
      if (hookOwned) await deleteQdisc(ctx.rt, { dev: cfg.dev, parent: TC_H_CLSACT });
      else await deleteHookFilters(ctx, { dev: cfg.dev, parent, prios });
      // Gone now: a clsact hook on the device at teardown is somebody's (or a hold's leftover, which
      // removeHoldSteering deletes only if it carries no filter but synhold's), never teardown's to delete.
      delete state.created.hook;
      state.created.filters = [];
      state.steering = 'while-holding';
      state.holdFilters = { dev: cfg.dev, parent, prios, matches, ...(hookOwned ? { hook: true } : {}) };
      if (cfg.steering === 'auto') state.steeringReason = 'redirect topology: the filters (and the hook setup made) are there only while holding';
    } else state.steering = 'always';
    return state;
  });
}

/**
 * --egress-topology auto: the clsact redirect, which leaves the device's root alone (and with its
 * filters only while holding, the device as it was between holds), unless the device has an
 * `ingress` qdisc (no egress hook to hang a filter on) or the kernel cannot build it (no IFB
 * device type, no clsact qdisc, no mirred action): then the seed's prio root. A failed redirect
 * attempt has undone itself (atomically) before prio is tried.
 */
async function installEgressAuto(cfg: SetupConfig, ctx: BackendContext): Promise<PlugState> {
  const hook = (await listQdiscs(ctx.rt, cfg.dev)).find((q) => q.parent === TC_H_INGRESS);
  let why: string;
  if (hook && hook.kind !== 'clsact') {
    why = `dev ${cfg.dev} has an ${hook.kind} qdisc, which has no egress hook for the clsact redirect`;
  } else {
    try {
      const state = await installRedirect(cfg, ctx, 'egress');
      state.topologyReason = `dev ${cfg.dev}'s root qdisc untouched, matching SYNs redirected to an IFB`;
      return state;
    } catch (e) {
      const lacks = redirectUnsupported(e);
      if (!lacks) throw e;
      why = `this kernel cannot build the clsact redirect (${lacks})`;
    }
  }
  if (cfg.steering === 'while-holding') {
    throw new BackendUnavailableError(`--steering while-holding needs the clsact redirect, and ${why}; the prio topology steers always`);
  }
  const state = await installEgress(cfg, ctx);
  state.topologyReason = `auto: ${why}`;
  return state;
}

/**
 * Whether an error building the redirect says the kernel lacks a piece of it (then the prio
 * topology may still work), and which: what rtnetlink answers for a link type, qdisc or action
 * kind it has no module for (EOPNOTSUPP "Unknown device type"; ENOENT "kind is unknown" /
 * "Failed to load TC action module"). Anything else (permissions, a busy filter priority) is
 * not a reason to build something else.
 */
export function redirectUnsupported(e: unknown): string | undefined {
  if (!(e instanceof NetlinkError)) return undefined;
  if (e.errno !== 95 && e.errno !== 2) return undefined;
  return e.message;
}

/** Deletes synhold's two filters from a hook (either may be gone already); how many were there. */
async function deleteHookFilters(ctx: BackendContext, f: { dev: string | number; parent: number; prios: { v4: number; v6: number } }): Promise<number> {
  let deleted = 0;
  for (const prio of [f.prios.v4, f.prios.v6]) {
    await deleteFilter(ctx.rt, { dev: f.dev, parent: f.parent, prio }).then(
      () => deleted++,
      (e: unknown) => ignoreGone(e),
    );
  }
  return deleted;
}

/**
 * Whether a device's clsact hook carries no filter on either side. A dump that fails answers no:
 * the hook may carry somebody's filters, and keeping it costs little where deleting it loses theirs.
 */
async function hookEmpty(ctx: BackendContext, dev: string | number): Promise<boolean> {
  const sides = [makeHandle(0xffff, TC_H_MIN_INGRESS), makeHandle(0xffff, TC_H_MIN_EGRESS)];
  try {
    const found = await Promise.all(sides.map((parent) => listFilters(ctx.rt, dev, parent)));
    return found.every((l) => l.length === 0);
  } catch {
    return false;
  }
}

/**
 * Steering while-holding, after a hold: its filters gone, and the hook with them when setup did not
 * find one there (f.hook) and `hookMade` (the hold that ends made it; undefined: not known, as for a
 * dead hold's leftovers), unless somebody has hung filters of their own on it since.
 */
async function removeHoldSteering(
  ctx: BackendContext,
  f: NonNullable<PlugState['holdFilters']>,
  dev: string | number = f.dev,
  hookMade?: boolean,
): Promise<void> {
  await deleteHookFilters(ctx, { dev, parent: f.parent, prios: f.prios });
  if (f.hook && hookMade !== false && (await hookEmpty(ctx, dev))) await deleteQdisc(ctx.rt, { dev, parent: TC_H_CLSACT }).catch(ignoreGone);
}

/**
 * Steering while-holding: the hold's hook and filters, on the device by index (resolved once, at
 * prepare). add() first deletes the filters a hold that died may have left (the watchdog releases the
 * plug, not the steering); a clsact hook already there (left so, or somebody's) is used as it is.
 */
function holdFilterSteering(ctx: BackendContext, f: NonNullable<PlugState['holdFilters']>, devIndex: number, ifbIndex: number) {
  // Whether the hook is this hold's to delete at its release: it made it, or found it with a dead
  // hold's filters on it (setup found no hook, so a hook carrying synhold's filters is synhold's
  // leftover). Any other hook there (somebody's, added since setup, even empty) is not.
  let hookMade = false;
  return {
    async add(): Promise<void> {
      const leftovers = await deleteHookFilters(ctx, { dev: devIndex, parent: f.parent, prios: f.prios });
      if (f.hook) {
        hookMade = await addQdisc(ctx.rt, { dev: devIndex, parent: TC_H_CLSACT, handle: makeHandle(0xffff, 0), kind: 'clsact' }).then(
          () => true,
          (e: unknown) => {
            if ((e as { errno?: number }).errno !== 17) throw e; // EEXIST: a hook is there; hang the filters on it
            return leftovers > 0;
          },
        );
      }
      await addSynFilters(ctx, f.matches, devIndex, f.parent, f.prios, { redirectTo: ifbIndex });
      fault('steering-added');
    },
    remove: () => removeHoldSteering(ctx, f, devIndex, hookMade),
  };
}

export const plugBackend: HoldBackend<PlugState> = {
  name: 'plug',
  cost: 'new connections wait for the hold (no retransmit, no loss up to the byte limit)',
  probe: probePlug,

  install(cfg, ctx) {
    if (cfg.direction === 'ingress') return installRedirect(cfg, ctx, 'ingress');
    if (cfg.egressTopology === 'auto') return installEgressAuto(cfg, ctx);
    return cfg.egressTopology === 'clsact' ? installRedirect(cfg, ctx, 'egress') : installEgress(cfg, ctx);
  },

  async uninstall(s, ctx) {
    // Release before deleting: deleting a plug drops what it holds.
    await this.forceRelease(s, ctx).catch(() => undefined);
    const c = s.created;
    for (const f of c.filters) {
      if (!c.rootPrio && !c.hook) await deleteFilter(ctx.rt, f).catch(ignoreGone);
    }
    // While-holding filters on a device's hook redirect to the IFB deleted below, where mirred drops
    // them: a second attempt before the IFB goes, as forceRelease's (its error ignored above) may have failed.
    if (s.holdFilters) await deleteHookFilters(ctx, s.holdFilters).catch(() => undefined);
    // A hook setup made and kept (steering always). A record written before the while-holding setup
    // forgot its own hook still names it there: that hook is removeHoldSteering's, not this.
    if (c.hook && !s.holdFilters) await deleteQdisc(ctx.rt, { dev: c.hook.dev, parent: TC_H_CLSACT }).catch(ignoreGone);
    if (c.rootPrio) await deleteQdisc(ctx.rt, { dev: c.rootPrio.dev, parent: TC_H_ROOT }).catch(ignoreGone);
    if (c.ifb) await deleteLink(ctx.rt, c.ifb).catch(ignoreGone);
  },

  async verify(s, ctx) {
    return (await inspect(s, ctx, indexer(ctx))).gone;
  },

  async prepare(s, ctx) {
    // Resolve each device once: the checks, the hold and its release then address it by index
    // (in the kernel lab a round trip is milliseconds, and this is on every reload's path).
    const index = indexer(ctx);
    const ifindex = await index(s.plug.dev).catch((e: unknown) => {
      throw new SteeringGoneError(`the plug's device ${s.plug.dev} is gone (${(e as Error).message}); run synhold setup again`);
    });
    const found = await inspect(s, ctx, index);
    if (!('plug' in found))
      throw new SteeringGoneError(`${found.gone} (replaced or deleted since setup): holding would protect nothing; run synhold setup again`);
    const plug = new Plug(ctx.rt, { ...plugRef(s), dev: ifindex });
    // The counters as the check's dump found them: what the release's reading is compared with.
    const before = plugStatsFrom(found.plug.stats);
    // Before the watchdog's socket is opened: a device gone must not leave it open.
    const hf = s.holdFilters;
    const steer = hf
      ? holdFilterSteering(
          ctx,
          hf,
          await index(hf.dev).catch((e: unknown) => {
            throw new SteeringGoneError(`dev ${hf.dev} is gone (${(e as Error).message}); run synhold setup again`);
          }),
          ifindex,
        )
      : undefined;
    // The watchdog gets a socket of its own in the same namespace: a release it
    // sends must not race ours for acknowledgements on one socket.
    const spare = NetlinkSocket.open(NETLINK_ROUTE, ctx.netns ? { netns: ctx.netns } : {});
    const release = encodeMessage({
      type: RTM_NEWQDISC,
      flags: NLM_F_REQUEST | NLM_F_ACK,
      seq: spare.reserveSeq(),
      payload: encodeQdiscRequest(ifindex, { parent: s.plug.parent, handle: s.plug.handle, kind: 'plug', options: { action: 'release_indefinite' } }),
    });
    return {
      fallback: { sockets: [spare.fd], messages: [{ socket: 0, bytes: release }], commands: [], relayAcks: (l) => spare.onReservedAck(l) },
      async start() {
        await plug.buffer();
        // While holding: the plug holds first, then the filters send SYNs to it (the other way round,
        // a SYN redirected before the buffer would pass). A failure lets go of the plug: nothing held.
        // What add() put in place goes too (a filter left on the device would redirect SYNs through a
        // released plug). The error said is the start's; a release that fails too is added to it, and
        // marked so that the hold's starter has its watchdog release the plug.
        if (steer) {
          try {
            await steer.add();
          } catch (e) {
            await steer.remove().catch(() => undefined);
            try {
              fault('start-release');
              await plug.releaseIndefinite();
            } catch (e2) {
              if (e instanceof Error) e.message += `; releasing the plug after it failed too (${(e2 as Error).message})`;
              markHoldMayBeOn(e);
            }
            throw e;
          }
        }
        return {
          async release() {
            // Read what is held just before letting it go: that is what this hold delayed.
            const atRelease = await plug.stats().catch(() => undefined);
            try {
              await plug.releaseIndefinite();
            } finally {
              // After the release (a SYN redirected in between passes the released plug), and also when the
              // release failed (the watchdog's then lets go of the plug, and nothing else): the hook empty
              // again. A failed delete leaves the filters' cost until the next hold or teardown removes them.
              await steer?.remove().catch(() => undefined);
            }
            return { released: atRelease?.heldPackets ?? 0, drops: (atRelease?.drops ?? before.drops) - before.drops };
          },
          // The watchdog's release lets go of the plug only: the filters (and the hook this hold made) go
          // here rather than stay on every packet's path until the next hold or teardown.
          ...(steer
            ? {
                async afterWatchdogRelease() {
                  fault('steering-cleanup');
                  await steer.remove();
                },
              }
            : {}),
        };
      },
      close() {
        spare.close();
      },
    };
  },

  async forceRelease(s, ctx) {
    try {
      await new Plug(ctx.rt, plugRef(s)).releaseIndefinite();
    } finally {
      // Steering while-holding: the filters of the hold that ends here (the watchdog's own release,
      // a message prepared in advance, lets go of the plug only; the next hold replaces what it leaves).
      if (s.holdFilters) await removeHoldSteering(ctx, s.holdFilters);
    }
  },

  async counters(s, ctx): Promise<HoldCounters> {
    const st = await new Plug(ctx.rt, plugRef(s)).stats();
    return { heldPackets: st.heldPackets, heldBytes: st.heldBytes, drops: st.drops, packets: st.packets };
  },
};

/** A device's index by name, each name looked up once per use of the resolver. */
function indexer(ctx: BackendContext): (dev: string) => Promise<number> {
  const seen = new Map<string, Promise<number>>();
  return (dev) => {
    let p = seen.get(dev);
    if (!p) seen.set(dev, (p = linkIndex(ctx.rt, dev)));
    return p;
  };
}

/** What setup installed and is missing now (undefined: all there), and the plug qdisc as the kernel lists it. */
async function inspect(
  s: PlugState,
  ctx: BackendContext,
  index: (dev: string) => Promise<number>,
): Promise<{ gone: string } | { gone?: undefined; plug: QdiscInfo }> {
  const qdiscs = await index(s.plug.dev)
    .then((i) => listQdiscs(ctx.rt, i))
    .catch(() => []);
  const plug = qdiscs.find((q) => q.handle === s.plug.handle && q.kind === 'plug');
  if (!plug) return { gone: `the plug qdisc on dev ${s.plug.dev} is gone` };
  for (const f of s.created.filters) {
    const present = await index(f.dev)
      .then((i) => listFilters(ctx.rt, i, f.parent))
      .catch(() => []);
    if (!present.some((p) => p.prio === f.prio && p.kind === 'u32')) return { gone: `the steering filter at prio ${f.prio} on dev ${f.dev} is gone` };
  }
  return { plug };
}

function ignoreGone(e: unknown): void {
  // Teardown is idempotent: an object already gone is what we wanted.
  const errno = (e as { errno?: number }).errno;
  if (errno === 2 || errno === 19 || errno === 22) return;
  throw e;
}

/**
 * Can this kernel build the plug topology `cfg` asks for? The probe creates its qdiscs on a
 * throwaway IFB device that carries no traffic (never on lo: a new plug starts plugged, and
 * deleting it drops what it holds), then deletes the device and its qdiscs with it.
 */
async function probePlug(cfg: SetupConfig, ctx: BackendContext): Promise<ProbeResult> {
  // Unique per process (one probe at a time each); node:crypto is not worth loading on every protect for this.
  const name = `shprobe${(process.pid & 0xffffff).toString(16)}`;
  try {
    await addIfb(ctx.rt, name);
  } catch (e) {
    if (cfg.direction === 'ingress' || cfg.egressTopology === 'clsact') {
      return { ok: false, missing: `IFB devices (CONFIG_IFB / module ifb): ${(e as Error).message}` };
    }
    return { ok: false, missing: `a throwaway IFB device to probe on: ${(e as Error).message}` };
  }
  try {
    const missing = await probeQdisc(ctx, name, 'plug');
    if (missing) return { ok: false, missing };
    if (cfg.direction === 'egress' && cfg.egressTopology === 'prio') {
      const noPrio = await probeQdisc(ctx, name, 'prio');
      if (noPrio) return { ok: false, missing: noPrio };
    }
    if (cfg.direction === 'egress' && cfg.egressTopology === 'auto') {
      // auto builds prio where it cannot redirect; its other reasons to (no act_mirred, an `ingress`
      // qdisc on the device) are found by setup itself, which then falls back the same way.
      const noClsact = await probeQdisc(ctx, name, 'clsact');
      const noPrio = noClsact && (await probeQdisc(ctx, name, 'prio'));
      if (noPrio) return { ok: false, missing: `${noClsact}, and ${noPrio}` };
    }
    return { ok: true };
  } finally {
    await deleteLink(ctx.rt, name).catch(() => undefined);
  }
}

/** Adds a qdisc of `kind` to the probe device and deletes it: undefined if the kernel took it, else what is missing. */
async function probeQdisc(ctx: BackendContext, dev: string, kind: 'plug' | 'prio' | 'clsact'): Promise<string | undefined> {
  const parent = kind === 'clsact' ? TC_H_CLSACT : TC_H_ROOT;
  const options = kind === 'plug' ? { action: 'limit', limit: 1 } : kind === 'prio' ? { bands: 3 } : undefined;
  try {
    await addQdisc(ctx.rt, { dev, parent, handle: makeHandle(kind === 'clsact' ? 0xffff : 1, 0), kind, ...(options ? { options } : {}) });
    await deleteQdisc(ctx.rt, { dev, parent });
    return undefined;
  } catch (e) {
    const config = kind === 'clsact' ? 'CONFIG_NET_SCH_INGRESS; `modprobe sch_ingress`' : `CONFIG_NET_SCH_${kind.toUpperCase()}; \`modprobe sch_${kind}\``;
    if (e instanceof NetlinkError && /kind is unknown/i.test(e.kernelMessage ?? '')) return `sch_${kind} (${config})`;
    return `sch_${kind}: ${(e as Error).message}`;
  }
}
