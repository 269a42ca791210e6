/**
 * protect's side of the daemon (daemon.ts): one connection per hold. Used when
 * a daemon answers on the namespace's socket; otherwise protect holds itself.
 * Every wait is bounded: a stopped or hung daemon never keeps protect waiting
 * past its lock wait (for the hold) or a few seconds (for the release), and a
 * release the daemon does not confirm is done through the hold's watchdog.
 */
import { DaemonGoneError, DaemonTimeoutError, errorFromWire } from '../model/errors.js';
import type { ReleaseCause } from './hold/cause.js';
import { processId, signalWatchdog } from './hold/process-id.js';
import type { Held, HoldHandle, Released } from './hold/session.js';
import { StateStore } from './state.js';
import { LineConnection } from './unix-json.js';
import type { Reply } from './daemon-protocol.js';

/** Beyond the lock wait, how long the daemon may take to hold. */
const HOLD_SLACK_MS = 5000;
/** How long the daemon may take to confirm a release before protect goes to the watchdog. */
const RELEASE_WAIT_MS = 1000;

function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(onTimeout()), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e as Error);
      },
    );
  });
}

/** How long past the deadline protect waits for the daemon's word before going to the watchdog. */
const BACKUP_MS = 300;

/** Ends the daemon's hold through its watchdog (SIGTERM, and SIGCONT in case it is stopped); waits, bounded, for it to exit. */
async function viaWatchdog(store: StateStore, held: Held): Promise<void> {
  const rec = store.readHold();
  if (!rec || rec.watchdog.pid !== held.watchdogPid) return;
  // SIGUSR1: "max-hold passed", recorded as a safety-net release (SIGTERM would read as synhold release).
  await signalWatchdog(rec.watchdog, 'SIGUSR1', 500);
}

/** Asks the namespace's daemon to hold; undefined when no daemon answers (then protect holds itself). */
export async function holdViaDaemon(
  netns: string | undefined,
  args: { maxHoldMs: number; lockWaitMs: number; signal?: AbortSignal },
): Promise<HoldHandle | undefined> {
  const store = StateStore.for(netns);
  const conn = LineConnection.connect<Reply>(store.daemonSocketPath, 200);
  if (!conn) return undefined;
  let onReply: (m: Reply) => void = () => undefined;
  let resolveDone!: (r: Released) => void;
  const done = new Promise<Released>((r) => (resolveDone = r));
  conn.onMessage((m) => {
    if (m.type === 'released') resolveDone(m);
    onReply(m);
  });
  const next = (type: 'held' | 'released'): Promise<Reply> =>
    new Promise((resolve, reject) => {
      onReply = (m) => {
        if (m.type === type) resolve(m);
        else if (m.type === 'error') reject(errorFromWire(m.code, m.message));
      };
      void conn.closed.then(() => reject(new DaemonGoneError(`the synhold daemon went away before it ${type === 'held' ? 'held' : 'released'}`)));
    });
  const abort = () => conn.close();
  args.signal?.addEventListener('abort', abort, { once: true });
  const heldReply = next('held');
  conn.send({ op: 'hold', maxHoldMs: args.maxHoldMs, lockWaitMs: args.lockWaitMs, client: processId(process.pid) });
  let held: Held;
  try {
    held = (await withTimeout(heldReply, args.lockWaitMs + HOLD_SLACK_MS, () => new DaemonTimeoutError('the synhold daemon did not answer in time'))) as Held;
  } catch (e) {
    // Closing the connection is how a client gives up: a hold the daemon takes later is released at once.
    conn.close();
    args.signal?.throwIfAborted();
    throw e;
  } finally {
    args.signal?.removeEventListener('abort', abort);
  }
  // The daemon gone while holding: its watchdog released (owner gone). Say so to protect's loop.
  void conn.closed.then(() => resolveDone({ durationMs: Date.now() - held.since, released: 0, drops: 0, cause: { kind: 'owner-gone' }, by: 'watchdog' }));
  // Past the deadline with no word from the daemon: it and its watchdog are stopped or hung.
  // End the hold through the watchdog ourselves (SIGCONT lets a stopped one act).
  const backup = setTimeout(
    () => {
      void viaWatchdog(store, held).then(() =>
        resolveDone({ durationMs: Date.now() - held.since, released: 0, drops: 0, cause: { kind: 'max-hold' }, by: 'watchdog' }),
      );
    },
    held.deadline - Date.now() + BACKUP_MS,
  );
  // However the hold ended (our release, the daemon's unsolicited report, the backup above),
  // the connection has done its work: close it, or it would keep protect running.
  void done.then(() => {
    clearTimeout(backup);
    conn.close();
  });
  return {
    held,
    done,
    async release(cause: ReleaseCause) {
      const answered = next('released') as Promise<Released>;
      answered.catch(() => undefined);
      conn.send({ op: 'release', cause });
      try {
        return await Promise.race([done, withTimeout(answered, RELEASE_WAIT_MS, () => new DaemonTimeoutError('no release confirmation'))]);
      } catch {
        // A stopped or hung daemon: its hold's watchdog releases on SIGTERM.
        await viaWatchdog(store, held);
        return { durationMs: Date.now() - held.since, released: 0, drops: 0, cause, by: 'watchdog' as const };
      } finally {
        clearTimeout(backup);
        conn.close();
      }
    },
  };
}
