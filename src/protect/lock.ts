/**
 * An exclusive flock(2) on a file, waited for by polling. The kernel drops the
 * lock when its holder dies, even by kill -9, so it can never go stale.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { native } from '../native/addon.js';
import { SynholdError } from '../model/errors.js';

export class FileLock {
  private fd: number;
  private constructor(fd: number) {
    this.fd = fd;
  }

  /** Takes the lock, waiting up to waitMs; undefined if someone else kept it that long. */
  static async acquire(path: string, waitMs: number): Promise<FileLock | undefined> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      let fd: number;
      try {
        fd = native().tryLock(path);
      } catch (e) {
        throw new SynholdError('ERR_LOCK', `cannot lock ${path}: ${(e as Error).message}`);
      }
      if (fd >= 0) return new FileLock(fd);
      if (Date.now() >= deadline) return undefined;
      await sleep(2);
    }
  }

  release(): void {
    if (this.fd >= 0) native().unlock(this.fd);
    this.fd = -1;
  }
}
