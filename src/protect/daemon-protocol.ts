/**
 * The daemon's wire protocol: newline-delimited JSON on <state dir>/holder.sock
 * (mode 0600), one connection per hold. Both ends import these types, and the
 * daemon validates every request with parseRequest() before acting on it.
 *
 *   {"op":"hold","maxHoldMs":N,"lockWaitMs":N,"client":{"pid":N,"start":"S"}} -> held | error
 *   {"op":"release","cause":{...}}                                          -> released | error
 *   {"op":"ping"}                                                           -> pong
 * A hold that ends on its own (max-hold, `synhold release`) is reported with an
 * unsolicited `released`.
 */
import { MAX_DURATION_MS } from '../model/config.js';
import type { ReleaseCause } from './hold/cause.js';
import type { ProcessId } from './hold/process-id.js';
import type { Held, Released } from './hold/session.js';

export type Request = { op: 'hold'; maxHoldMs: number; lockWaitMs: number; client: ProcessId } | { op: 'release'; cause: ReleaseCause } | { op: 'ping' };

export type Reply =
  ({ type: 'held' } & Held) | ({ type: 'released' } & Released) | { type: 'error'; code: string; message: string } | { type: 'pong'; pid: number };

/** Longest request line accepted; a longer one closes the connection. */
export const MAX_LINE = 4096;

/** Causes a client may give for its release (the rest belong to the hold's own paths). */
const CLIENT_CAUSES = new Set(['reload-done', 'command-exited', 'command-failed', 'timeout', 'signal', 'error']);

const isInt = (v: unknown, lo: number, hi: number): v is number => typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;

/** A valid request, or the reason it is not one. */
export function parseRequest(line: string): Request | { invalid: string } {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return { invalid: 'not JSON' };
  }
  if (typeof v !== 'object' || v === null) return { invalid: 'not an object' };
  const r = v as Record<string, unknown>;
  switch (r.op) {
    case 'ping':
      return { op: 'ping' };
    case 'hold': {
      if (!isInt(r.maxHoldMs, 1, MAX_DURATION_MS.maxHold)) return { invalid: `maxHoldMs must be an integer in 1..${MAX_DURATION_MS.maxHold}` };
      if (!isInt(r.lockWaitMs, 0, MAX_DURATION_MS.lockWait)) return { invalid: `lockWaitMs must be an integer in 0..${MAX_DURATION_MS.lockWait}` };
      const c = r.client as Record<string, unknown> | undefined;
      if (!c || !isInt(c.pid, 1, 2 ** 22) || typeof c.start !== 'string' || !/^\d{1,20}$/.test(c.start)) return { invalid: 'client must be {pid, start}' };
      return { op: 'hold', maxHoldMs: r.maxHoldMs, lockWaitMs: r.lockWaitMs, client: { pid: c.pid, start: c.start } };
    }
    case 'release': {
      const c = r.cause as Record<string, unknown> | undefined;
      if (!c || typeof c.kind !== 'string' || !CLIENT_CAUSES.has(c.kind)) return { invalid: 'cause.kind is not one a client may give' };
      for (const k of ['detail', 'signal', 'message'] as const) {
        if (c[k] !== undefined && (typeof c[k] !== 'string' || c[k].length > 1024)) return { invalid: `cause.${k} must be a short string` };
      }
      return { op: 'release', cause: c as unknown as ReleaseCause };
    }
    default:
      return { invalid: `unknown op ${JSON.stringify(r.op)?.slice(0, 40)}` };
  }
}
