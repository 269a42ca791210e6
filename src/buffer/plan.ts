/**
 * Everything a buffer checks before it changes anything: the filter, the queue
 * number, max-hold, the namespace and the device, and which iptables to use.
 * Any problem here is bad input (exit 2) or a busy queue (exit 4), and the
 * kernel is exactly as it was.
 */
import { ConfigError, MAX_DURATION_MS, normalizeConfig } from '../model/config.js';
import { plugBackend } from '../backends/plug.js';
import type { BufferBackend } from './engine.js';
import { BackendUnavailableError, BadDeviceError, BusyError } from '../model/errors.js';
import type { IpFamily } from '../model/prefix.js';
import { NetlinkError } from '../netlink/errors.js';
import { Iptables, runCommand, type IptablesBackend } from '../netfilter/iptables.js';
import { readKernelQueueStats } from '../nfqueue/proc.js';
import { getLink } from '../rtnl/link.js';
import { withRtnl } from '../rtnl/rtnl.js';
import { StateStore } from '../protect/state.js';
import { normalizeFilter, type BufferFilter, type BufferFilterInput } from './filter.js';
import { BufferPaths } from './paths.js';
import { buildSteering, detectBackend, removeSteering, restoreArgv, type BufferSteering } from './steering.js';

/**
 * protect's default queue is 7001 (src/model/config.ts); buffers default to a
 * number of their own so both run on one machine without a flag.
 */
export const DEFAULT_BUFFER_QUEUE = 7100;
export const DEFAULT_BUFFER_MAX_HOLD_MS = 60_000;

export interface BufferOptions extends BufferFilterInput {
  /** A network namespace (a name under /run/netns, or a path); default: this process's. */
  netns?: string;
  /** The NFQUEUE number (default 7100), and the buffer's name with either backend: one buffer per number and namespace. */
  queue?: number;
  /** The watchdog ends the buffer this long after it began, whatever happens (default 60 s, at most 10 min). */
  maxHoldMs?: number;
  /** Serve `synhold buffer step|list|release` on the control socket (default true). */
  control?: boolean;
  /** plug where the kernel has sch_plug, else nfqueue (auto, the default, as setup chooses). */
  backend?: 'auto' | BufferBackend;
}

export interface BufferPlan {
  filter: BufferFilter;
  queue: number;
  maxHoldMs: number;
  netns?: string;
  paths: BufferPaths;
  backend: BufferBackend;
  /** Why this backend (auto's probe result, or "requested"). */
  backendReason: string;
  /** The nfqueue backend's iptables rules. */
  steering?: BufferSteering;
  control: boolean;
}

export function checkQueue(queue: unknown): number {
  if (typeof queue !== 'number' || !Number.isInteger(queue) || queue < 0 || queue > 65535) {
    throw new ConfigError(`--queue-num ${String(queue)} is not in 0..65535`);
  }
  return queue;
}

function checkMaxHold(ms: number | undefined): number {
  if (ms === undefined) return DEFAULT_BUFFER_MAX_HOLD_MS;
  if (!Number.isFinite(ms) || ms <= 0 || ms > MAX_DURATION_MS.maxHold) {
    throw new ConfigError(`--max-hold ${String(ms)} ms is not in (0, ${MAX_DURATION_MS.maxHold / 1000} s]`);
  }
  return Math.round(ms);
}

/** protect's own queue (its setup record) is not for a buffer: both would want to bind it. */
function checkNotProtectQueue(netns: string | undefined, queue: number): void {
  const setup = StateStore.for(netns).readSetup();
  if (setup?.backend === 'nfqueue' && setup.config.queueNum === queue) {
    throw new ConfigError(`queue ${queue} is the one synhold setup uses for protect here; give the buffer another --queue-num`);
  }
}

/** iptables takes any name for -i/-o (a wildcard for devices to come): a typo would hold nothing, silently. */
async function checkDevice(netns: string | undefined, dev: string): Promise<void> {
  await withRtnl(netns ? { netns } : {}, async (rt) => {
    try {
      await getLink(rt, dev);
    } catch (e) {
      if (e instanceof NetlinkError && e.errno === 19) throw new BadDeviceError(`no network interface named "${dev}" here (see \`ip link\`)`);
      throw e;
    }
  });
}

/** Validates everything and decides the backend and its rules; changes nothing. */
export async function planBuffer(opts: BufferOptions): Promise<BufferPlan> {
  const filter = normalizeFilter(opts);
  const queue = checkQueue(opts.queue ?? DEFAULT_BUFFER_QUEUE);
  const maxHoldMs = checkMaxHold(opts.maxHoldMs);
  const choice = opts.backend ?? 'auto';
  if (!['auto', 'nfqueue', 'plug'].includes(choice)) throw new ConfigError(`--backend must be auto, plug or nfqueue, not "${String(choice)}"`);
  const paths = BufferPaths.for(opts.netns, queue);
  await checkDevice(opts.netns, filter.dev);
  const { backend, reason } = await chooseBackend(choice, opts.netns);
  const plan: BufferPlan = { filter, queue, maxHoldMs, paths, backend, backendReason: reason, control: opts.control ?? true };
  if (opts.netns !== undefined) plan.netns = opts.netns;
  if (backend === 'nfqueue') {
    checkNotProtectQueue(opts.netns, queue);
    const bound = (await readKernelQueueStats(opts.netns)).find((s) => s.queue === queue);
    if (bound) {
      throw new BusyError(
        `queue ${queue} is already bound here (peer_portid ${bound.peerPortId} in /proc/net/netfilter/nfnetlink_queue); use another --queue-num`,
      );
    }
    plan.steering = buildSteering(filter, queue, await detectBackend(filter));
  }
  return plan;
}

/** As setup's auto: plug when this kernel has sch_plug and IFB (probed on a throwaway IFB device), else nfqueue. */
async function chooseBackend(choice: 'auto' | BufferBackend, netns: string | undefined): Promise<{ backend: BufferBackend; reason: string }> {
  if (choice === 'nfqueue') return { backend: 'nfqueue', reason: 'requested' };
  const probe = await withRtnl(netns ? { netns } : {}, (rt) =>
    plugBackend.probe({ ...normalizeConfig({ ports: [1] }), direction: 'ingress' }, netns ? { rt, netns } : { rt }),
  );
  if (probe.ok) return { backend: 'plug', reason: choice === 'plug' ? 'requested' : 'auto: this kernel has sch_plug' };
  if (choice === 'plug') throw new BackendUnavailableError(`no plug: missing ${probe.missing}`, { lacks: 'sch_plug' });
  return { backend: 'nfqueue', reason: `auto: no plug (missing ${probe.missing})` };
}

/**
 * Removes a live buffer's rules: its own deletion file per family (one
 * iptables-restore each, atomic), then the table iptables-nft leaves; by tag if
 * that fails (something changed the rules meanwhile).
 */
export async function removeOwnSteering(plan: BufferPlan): Promise<void> {
  const { paths, netns } = plan;
  const steering = plan.steering!;
  try {
    for (const r of steering.families) {
      await runCommand(restoreArgv(r.family, steering.iptables, paths.del(r.family), netns));
      await new Iptables({ backend: steering.iptables, family: r.family, netns }).tidyTable('raw');
    }
  } catch {
    await removeAllSteering(plan.queue, steering.iptables, netns);
  }
}

/** Removes every rule of this buffer in both families (ours, or a dead buffer's on the same queue). */
export async function removeAllSteering(queue: number, backend: IptablesBackend, netns?: string): Promise<number> {
  let n = 0;
  for (const family of [4, 6] as IpFamily[]) n += await removeSteering(queue, backend, family, netns);
  return n;
}
