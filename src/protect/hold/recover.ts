/**
 * "Release whatever holds here": the one path that `synhold release`, teardown
 * and a new hold finding a dead one's record all take. It changes hold state
 * only under the hold lock, except when an operator asks for a release and the
 * lock's keeper is stuck (stopped or hung) past the wait: then it forces the
 * kernel, because traffic must flow, and says so.
 */
import { backendFor } from '../../backends/index.js';
import { readKernelQueueStats } from '../../nfqueue/proc.js';
import { Rtnl } from '../../rtnl/rtnl.js';
import { FileLock } from '../lock.js';
import type { SetupRecord, StateStore } from '../state.js';
import { describeCause, type ReleaseCause } from './cause.js';
import { isAlive, signalProcess, signalWatchdog } from './process-id.js';

/** Ends the kernel side of a hold without its owner (a no-op when nothing is held). */
export async function forceRelease(setup: SetupRecord, netns: string | undefined): Promise<void> {
  const rt = netns ? Rtnl.open({ netns }) : Rtnl.open();
  try {
    await backendFor(setup.backend).forceRelease(setup.backendState, netns ? { rt, netns } : { rt });
  } finally {
    rt.close();
  }
}

/**
 * With the hold lock taken: a hold record means its owner and its watchdog both
 * died without releasing (the watchdog removes the record after a release of its
 * own, and the lock was free). End what they may have left on - a plug survives
 * its owner - and account for it. Returns whether there was such a record.
 */
export async function recoverUnderLock(store: StateStore, setup: SetupRecord, netns: string | undefined): Promise<boolean> {
  const rec = store.readHold();
  if (!rec) return false;
  await forceRelease(setup, netns);
  store.removeHold();
  const cause: ReleaseCause = { kind: 'recovered' };
  store.recordHold({
    startedAt: new Date(rec.since).toISOString(),
    durationMs: Date.now() - rec.since,
    released: 0,
    drops: 0,
    reason: describeCause(cause),
    cause: cause.kind,
  });
  return true;
}

export interface ReleaseHereResult {
  /** What was done, for people. */
  how: string;
  /** Whether a hold was on (live or left behind). */
  wasHolding: boolean;
  /** Set when the caller asked to keep the hold lock (teardown keeps it while it removes everything). */
  lock?: FileLock;
}

/**
 * Ends the hold in this namespace, if any: a live one through its watchdog
 * (SIGTERM; SIGCONT too, so a stopped watchdog can act), a dead one's leftovers
 * directly. Waits up to waitMs for the hold's processes to let go of the lock.
 */
export async function releaseHere(
  store: StateStore,
  setup: SetupRecord,
  netns: string | undefined,
  /** as 'max-hold': a safety net past the deadline (the daemon's reaper), recorded as such, not as an operator's release. */
  opts: { waitMs: number; keepLock?: boolean; as?: 'manual' | 'max-hold' },
): Promise<ReleaseHereResult> {
  const finish = (r: Omit<ReleaseHereResult, 'lock'>, lock: FileLock): ReleaseHereResult => {
    if (opts.keepLock) return { ...r, lock };
    lock.release();
    return r;
  };
  const free = FileLock.tryAcquire(store.holdLockPath);
  if (free) {
    const had = await recoverUnderLock(store, setup, netns);
    // No record and no lock: nothing synhold knows of holds. Release anyway (cheap and
    // idempotent): a hold record lost to a full /run must not mean a plug left on.
    if (!had) await forceRelease(setup, netns);
    return finish({ how: had ? 'the hold record was stale (its owner and watchdog were gone); released directly' : 'nothing was held', wasHolding: had }, free);
  }
  const rec = store.readHold();
  let how = 'a hold was starting or ending';
  // The watchdog records SIGTERM as "synhold release", SIGUSR1 as max-hold.
  if (rec && (await signalWatchdog(rec.watchdog, opts.as === 'max-hold' ? 'SIGUSR1' : 'SIGTERM', opts.waitMs))) {
    how = `released by the hold's watchdog (pid ${rec.watchdog.pid}, holding for ${rec.via} pid ${rec.owner.pid})`;
    // The watchdog removes the record once its release succeeded: the kernel hold is off,
    // whatever the owner (maybe stopped, still keeping the lock) does next.
    if (!isAlive(rec.watchdog) && !store.readHold()) {
      const lock = await FileLock.acquire(store.holdLockPath, Math.min(200, opts.waitMs));
      if (lock) {
        // The watchdog's release is prepared in advance and lets go of the plug only: the plug's
        // filters of a steering while holding go here, under the lock (idempotent: the plug again too).
        if (setup.backend === 'plug') await forceRelease(setup, netns).catch(() => undefined);
        return finish({ how, wasHolding: true }, lock);
      }
      return { how: `${how}; its owner still keeps the hold lock (stopped or finishing)`, wasHolding: true };
    }
  }
  const lock = await FileLock.acquire(store.holdLockPath, opts.waitMs);
  if (lock) {
    await recoverUnderLock(store, setup, netns);
    return finish({ how, wasHolding: true }, lock);
  }
  // Still locked: the owner is stopped or hung. The kernel hold is what matters: end it.
  await forceRelease(setup, netns);
  let forced = `forced after ${opts.waitMs} ms: the hold's owner is stuck`;
  if (setup.backend === 'nfqueue') {
    // A queue is bound for as long as any process has its socket open: only their end unbinds it
    // (the kernel drops what it held; those clients get through with their next SYN retransmit).
    const q = (await readKernelQueueStats(netns).catch(() => [])).find((k) => k.queue === (setup.backendState as { queue?: number }).queue);
    if (q && rec) {
      for (const id of [rec.watchdog, rec.owner]) signalProcess(id, 'SIGKILL');
      forced += `; killed its ${rec.via} (pid ${rec.owner.pid}) and watchdog (pid ${rec.watchdog.pid}) to unbind queue ${q.queue}`;
    }
  }
  if (rec && !isAlive(rec.watchdog) && !isAlive(rec.owner)) store.removeHold();
  return { how: forced, wasHolding: true };
}
