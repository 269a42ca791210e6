/** Waiting on processes and conditions in tests: bounded in time and in count, never open-ended. */
import { setTimeout as sleep } from 'node:timers/promises';

/** Whether a process with this pid exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Polls fn every intervalMs (default 5) until it returns something truthy, and returns that. Gives
 * up after timeoutMs (fn runs at least once) or 100,000 polls, throwing "timed out waiting for
 * WHAT" (`what` may be a function, for a message that says how things stood then); fn throws
 * to give up early (the process it waits on died).
 */
export async function until<T>(
  what: string | (() => string),
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 10_000,
  intervalMs = 5,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (let i = 0; i < 100_000; i++) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) break;
    await sleep(intervalMs);
  }
  throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`);
}
