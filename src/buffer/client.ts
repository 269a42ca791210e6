/**
 * A buffer owned by another process (`synhold buffer start`, or a program using
 * buffer()), driven over its control socket: what `synhold buffer list|step|release` do.
 */
import { existsSync } from 'node:fs';
import { BusyError, NotSetUpError, errorFromWire, type SynholdError } from '../model/errors.js';
import { FileLock } from '../protect/lock.js';
import { detectIptables } from '../netfilter/iptables.js';
import { request, type BufferInfo, type ControlReply, type ControlRequest } from './control.js';
import { withRtnl } from '../rtnl/rtnl.js';
import { removePlugLeftovers } from './engine-plug.js';
import type { BufferReleased } from './buffer.js';
import type { BufferHeld, StepOptions, StepResult } from './engine.js';
import { BufferPaths } from './paths.js';
import { checkQueue, DEFAULT_BUFFER_QUEUE, removeAllSteering } from './plan.js';

export interface BufferRef {
  netns?: string;
  /** Default 7100, as buffer()'s. */
  queue?: number;
}

/** What `release` found when no owner answered: rules (nfqueue) or tc objects (plug) a dead buffer left, now removed. */
export interface StaleCleanup {
  stale: true;
  rulesRemoved: number;
}

function pathsOf(ref: BufferRef): BufferPaths {
  return BufferPaths.for(ref.netns, checkQueue(ref.queue ?? DEFAULT_BUFFER_QUEUE));
}

function noBuffer(paths: BufferPaths): SynholdError {
  return new NotSetUpError(`no buffer on queue ${paths.queue} here; start one with synhold buffer start`);
}

async function call<T extends ControlReply & { ok: true }>(paths: BufferPaths, req: ControlRequest): Promise<T> {
  const reply = existsSync(paths.socket) ? await request(paths.socket, req) : undefined;
  if (!reply) {
    // Nobody answers. A held lock means an owner that lives but does not listen (stopping, or stopped).
    if (FileLock.isHeld(paths.lock)) throw new BusyError(`the buffer on queue ${paths.queue} is starting or ending; try again`);
    throw noBuffer(paths);
  }
  if (!reply.ok) throw errorFromWire(reply.code, reply.message);
  return reply as T;
}

/** What is held (every packet, oldest first, with nfqueue; counts with plug), and what the buffer is. CLI equivalent: `synhold buffer list`. */
export async function listBuffer(ref: BufferRef = {}): Promise<{ info: BufferInfo; held: BufferHeld }> {
  const r = await call<Extract<ControlReply, { op: 'list' }>>(pathsOf(ref), { op: 'list' });
  return { info: r.info, held: r.held };
}

/** Releases the current epoch (or the oldest N, or drops). CLI equivalent: `synhold buffer step [--count N] [--drop]`. */
export async function stepBuffer(ref: BufferRef = {}, o: StepOptions = {}): Promise<StepResult> {
  return (await call<Extract<ControlReply, { op: 'step' }>>(pathsOf(ref), { op: 'step', ...o })).result;
}

/**
 * Releases everything and ends the buffer; with no owner alive, removes what a
 * dead one left (its rules; the watchdog removed them already unless it died
 * too). CLI equivalent: `synhold buffer release`.
 */
export async function releaseBuffer(ref: BufferRef = {}): Promise<BufferReleased | StaleCleanup> {
  const paths = pathsOf(ref);
  try {
    return (await call<Extract<ControlReply, { op: 'release' }>>(paths, { op: 'release' })).result;
  } catch (e) {
    if ((e as SynholdError).code !== 'ERR_NOT_SET_UP') throw e;
  }
  paths.ensure();
  const lock = FileLock.tryAcquire(paths.lock);
  if (!lock) throw new BusyError(`a buffer on queue ${paths.queue} started meanwhile`);
  try {
    const hadFiles = existsSync(paths.record) || existsSync(paths.socket) || existsSync(paths.plugState);
    const removed =
      (await withRtnl(ref.netns ? { netns: ref.netns } : {}, (rt) => removePlugLeftovers(paths, rt))) + (await removeStaleRules(paths, ref.netns));
    paths.removeFiles();
    if (!removed && !hadFiles) throw noBuffer(paths);
    return { stale: true, rulesRemoved: removed };
  } finally {
    lock.release();
  }
}

/** A dead nfqueue buffer's iptables rules; none where iptables cannot work (the kernel lab has no raw table). */
async function removeStaleRules(paths: BufferPaths, netns: string | undefined): Promise<number> {
  let backend = paths.readRecord()?.iptables;
  if (!backend) {
    try {
      backend = (await detectIptables({ family: 4, need: 'nfqueue' })).backend;
    } catch {
      return 0;
    }
  }
  return removeAllSteering(paths.queue, backend, netns);
}
