/**
 * An exclusive flock(2) on a file, waited for by polling. The kernel drops the
 * lock when the last descriptor of its open file closes, even by kill -9, so it
 * can never go stale; a hold's watchdog keeps a duplicate, so a hold's lock
 * lasts until both its owner and its watchdog are gone.
 *
 * The poll backs off from 2 ms to 32 ms: a waiter must not take the CPU from
 * the reload it waits for (in the one-CPU kernel lab, where a system call is
 * slow, a 2 ms poll did), and a hand-over 32 ms late is nothing next to a reload.
 */
import { readFileSync, statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { native } from '../native/addon.js';
import { LockError, NotSetUpError } from '../model/errors.js';

const MAX_POLL_MS = 32;
/** The shortest wait for the lock: longer than isHeld's probe holds it. */
const PROBE_GRACE_MS = 2;

export class FileLock {
  private lockFd: number;
  private constructor(fd: number) {
    this.lockFd = fd;
  }

  /** Takes the lock now, or undefined if someone has it. */
  static tryAcquire(path: string): FileLock | undefined {
    let fd: number;
    try {
      fd = native().tryLock(path);
    } catch (e) {
      // The state directory went away under us: a teardown ran meanwhile.
      if ((e as { errno?: number }).errno === 2) throw new NotSetUpError('synhold was torn down meanwhile; nothing is set up here');
      throw new LockError(`cannot lock ${path}: ${(e as Error).message}`);
    }
    return fd >= 0 ? new FileLock(fd) : undefined;
  }

  /**
   * Takes the lock, waiting up to waitMs; undefined if someone else kept it that
   * long. An abort (protect got a signal) ends the wait at once with the signal's reason.
   */
  static async acquire(path: string, waitMs: number, signal?: AbortSignal): Promise<FileLock | undefined> {
    // Even a wait of 0 tries twice, 2 ms apart: a lock found busy by a status probe's
    // microseconds (isHeld) is not a hold.
    const deadline = Date.now() + Math.max(waitMs, PROBE_GRACE_MS);
    let pollMs = 2;
    for (;;) {
      signal?.throwIfAborted();
      const lock = FileLock.tryAcquire(path);
      if (lock) return lock;
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      try {
        await sleep(Math.min(pollMs, left), undefined, signal ? { signal } : undefined);
      } catch {
        signal?.throwIfAborted();
      }
      pollMs = Math.min(pollMs * 2, MAX_POLL_MS);
    }
  }

  /**
   * Whether someone holds the lock. First a look at /proc/locks for a FLOCK on the file's device
   * and inode, which takes nothing. But /proc/locks names a flock by the pid that took it, and in a
   * PID namespace other than the initial one (a container, a pod, a bare CI run) it leaves out the
   * locks whose taker is not visible there, dead ones included: a manual hold's lock, taken by
   * `synhold plug` and kept by its watchdog after plug exited, was missing, and status called the
   * live hold a stale record. So when /proc/locks shows none, the kernel is asked with a shared
   * flock probe of a few microseconds (native isLocked); acquire() tries once more after a hold
   * finds the lock busy in such an instant.
   */
  static isHeld(path: string): boolean {
    let st: { dev: number; ino: number };
    try {
      st = statSync(path);
    } catch {
      return false; // no lock file: nobody has locked it
    }
    // dev_t as the kernel encodes it (new_encode_dev), printed by /proc/locks as MAJOR:MINOR:INODE (hex, hex, decimal).
    const major = Math.floor(st.dev / 256) & 0xfff;
    const minor = (st.dev & 0xff) | (Math.floor(st.dev / 4096) & ~0xff);
    const want = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${st.ino}`;
    const listed = readFileSync('/proc/locks', 'utf8')
      .split('\n')
      .some((l) => / FLOCK /.test(l) && l.split(/\s+/).includes(want));
    return listed || native().isLocked(path);
  }

  /** The descriptor, for a child process to inherit (the hold's watchdog). */
  get fd(): number {
    return this.lockFd;
  }

  release(): void {
    if (this.lockFd >= 0) native().unlock(this.lockFd);
    this.lockFd = -1;
  }
}
