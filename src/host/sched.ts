/**
 * Real-time priority for the calling thread while it holds new connections.
 *
 * Why: protect's loop releases the hold the moment the old listener is gone. On a host whose CPUs
 * are busy (the server being reloaded, its clients), a normal-priority loop waits for a CPU after
 * each wake-up: its second socket dump, its decision and the release each queue behind whatever
 * runs, and that wait was the tail of the release-after-swap gap (docs/BENCHMARKS.md). At
 * SCHED_FIFO priority 1, the lowest real-time one, it runs as soon as it is runnable. It sleeps
 * between polls and the hold is bounded by --max-hold, so it does not take the CPU from the
 * server; the kernel's real-time throttling (kernel.sched_rt_runtime_us) bounds it regardless.
 *
 * Only the calling thread (Node's main thread) is raised, with SCHED_RESET_ON_FORK: the reload
 * command and the watchdog, started while raised, run at normal priority (native/sched.c).
 * Without the privilege (CAP_SYS_NICE; a container, systemd's RestrictRealtime=) the hold goes on
 * at normal priority and says so.
 *
 * Not on one CPU: there the loop's polls would take the only CPU from the reload command it waits
 * for. Measured in the kernel lab (1 CPU), `protect -- true` took 1340 ms at real-time priority
 * against 1299 ms at normal (medians of 10 runs, taking turns: scripts/priority-lab.sh, on a build
 * without this rule; docs/PROTECT.md). "One CPU" is what this thread may
 * run on (sched_getaffinity, as os.availableParallelism reads it), so a cpuset or taskset counts.
 */
import { availableParallelism } from 'node:os';
import { isNativeError, native } from '../native/addon.js';

/** sched.h's policies. */
export const SCHED_OTHER = 0;
export const SCHED_FIFO = 1;
export const SCHED_RR = 2;

/** The lowest real-time priority: above every normal task, below any real-time task the host already runs. */
export const REALTIME_PRIORITY = 1;

export interface RealtimeLease {
  /** Whether the thread now runs at a real-time priority (raised here, or already). */
  readonly realtime: boolean;
  /** Why it holds at normal priority (absent when it is real-time). */
  readonly reason?: string;
  /** Back to the thread's policy from before; idempotent, never throws. */
  restore(): void;
}

/** The raise in effect on this thread, shared by the leases that overlap (two protect() calls of one process). */
let shared: { leases: number; undo: () => void } | undefined;

/**
 * Raises the calling thread to SCHED_FIFO REALTIME_PRIORITY until restore(). A thread that already
 * runs real-time (started under chrt, say) is left as the operator set it. Leases that overlap share
 * one raise, and the thread goes back to its policy when the last is restored, not the first.
 */
export function raiseToRealtime(): RealtimeLease {
  if (!shared) {
    const raised = raise();
    if (!raised.realtime || !raised.undo) return { realtime: raised.realtime, reason: raised.reason, restore: () => undefined };
    shared = { leases: 0, undo: raised.undo };
  }
  const s = shared;
  s.leases++;
  let restored = false;
  return {
    realtime: true,
    restore() {
      if (restored) return;
      restored = true;
      if (--s.leases > 0) return;
      shared = undefined;
      s.undo();
    },
  };
}

/** The raise itself: real-time or not, why not, and how to undo it (absent: nothing to undo). */
function raise(): { realtime: boolean; reason?: string; undo?: () => void } {
  const addon = native();
  let before: [number, number, boolean];
  try {
    before = addon.getScheduler();
  } catch (e) {
    return { realtime: false, reason: (e as Error).message };
  }
  const [policy, priority, resetOnFork] = before;
  if (policy === SCHED_FIFO || policy === SCHED_RR) return { realtime: true };
  if (availableParallelism() < 2) return { realtime: false, reason: 'one CPU: a real-time loop would take it from the reload command' };
  try {
    addon.setScheduler(SCHED_FIFO, REALTIME_PRIORITY, true);
  } catch (e) {
    const why = isNativeError(e) && e.errno === 1 ? 'not permitted (CAP_SYS_NICE)' : (e as Error).message;
    return { realtime: false, reason: `real-time priority ${why}` };
  }
  return {
    realtime: true,
    undo: () => {
      try {
        // Lowering one's own priority is always permitted; the nice value was kept meanwhile.
        addon.setScheduler(policy, priority, resetOnFork);
      } catch {
        // Nothing left to do: the thread stays real-time only until it exits.
      }
    },
  };
}
