/**
 * An exclusive flock(2) on a file, waited for by polling. The kernel drops the
 * lock when its holder dies, even by kill -9, so it can never go stale.
 *
 * The poll backs off from 2 ms to 32 ms: a waiter must not take the CPU from
 * the reload it waits for (in the one-CPU kernel lab, where a system call is
 * slow, a 2 ms poll did), and a hand-over 32 ms late is nothing next to a reload.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { native } from '../native/addon.js';
import { SynholdError } from '../model/errors.js';

const MAX_POLL_MS = 32;

export class FileLock {
  private fd: number;
  private constructor(fd: number) {
    this.fd = fd;
  }

  /** Takes the lock, waiting up to waitMs; undefined if someone else kept it that long. */
  static async acquire(path: string, waitMs: number): Promise<FileLock | undefined> {
    const deadline = Date.now() + waitMs;
    let pollMs = 2;
    for (;;) {
      let fd: number;
      try {
        fd = native().tryLock(path);
      } catch (e) {
        throw new SynholdError('ERR_LOCK', `cannot lock ${path}: ${(e as Error).message}`);
      }
      if (fd >= 0) return new FileLock(fd);
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await sleep(Math.min(pollMs, left));
      pollMs = Math.min(pollMs * 2, MAX_POLL_MS);
    }
  }

  release(): void {
    if (this.fd >= 0) native().unlock(this.fd);
    this.fd = -1;
  }
}
