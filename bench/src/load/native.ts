// The load generator's native engine (bench/native/loadgen-engine.c) as runLoad
// drives it: one child process, one epoll thread per share of the closed loop's
// concurrency, started here, told when to go, stop or abort on its stdin, and
// read back on its stdout in binary record batches (the frames are described
// at the top of the C file). Records are fed to runLoad's tally as the worker
// threads' batches are; a response the engine does not recognise as the plain
// ok one arrives as raw bytes and is judged here, by response.ts's
// responseProblem, so the two engines share one classification.
//
// Only the closed loop: the open loop stays on the JS engine (loadgen.ts).
// The binary is built by `npm run build` (package.json "build:engine") into
// dist/bench/native/, next to this file's compiled form.

import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { OUTCOME_OK, responseProblem, type Expectation } from './response.js';

/** Where `npm run build` puts the engine (dist/bench/native/loadgen-engine). */
export const NATIVE_ENGINE_PATH = fileURLToPath(new URL('../../native/loadgen-engine', import.meta.url));

/** Why the native engine cannot run here (one line), or undefined when it can. */
export function nativeEngineProblem(path = NATIVE_ENGINE_PATH): string | undefined {
  if (process.platform !== 'linux') return `the native engine is Linux-only (this is ${process.platform})`;
  try {
    accessSync(path, fsConstants.X_OK);
  } catch {
    return `the native engine ${path} is not built (npm run build compiles bench/native/loadgen-engine.c)`;
  }
  return undefined;
}

export interface NativeConfig {
  host: string;
  port: number;
  localAddress?: string;
  payload: Uint8Array;
  expect: Expectation;
  timeoutMs: number;
  /** across all threads (Infinity: unbounded) */
  maxRequests: number;
  /** from t0 (Infinity: unbounded) */
  durationMs: number;
  /** one thread per share */
  concurrency: number[];
  /** the engine's binary (default NATIVE_ENGINE_PATH) */
  path?: string;
}

/** One finished request, as runLoad's tally takes it. */
export type NativeSink = (startMs: number, latencyMs: number, outcome: number, tag: string | undefined) => void;

export interface NativeEngine {
  /** resolves with the engine's stop reason (engine.ts's STOP_*) when it has ended by itself */
  done: Promise<number>;
  go(t0: number): void;
  /** start nothing more (in-flight requests finish) */
  stop(): void;
  /** the hard deadline; resolves with how many requests it closed */
  abort(): Promise<number>;
  /** requests in flight, as of the last batch */
  inFlight(): number;
  /** the child's pid */
  pid: number | undefined;
  dispose(): Promise<void>;
}

const FRAME_READY = 1;
const FRAME_TAG = 2;
const FRAME_RECORDS = 3;
const FRAME_DONE = 4;
const FRAME_HEAD = 8;
const RECORD_BYTES = 28;
const KIND_JUDGE = 1;
const KIND_RESET_AFTER = 2;
const OUTCOME_BAD_RESPONSE = 4;

const START_MS = 30_000;
const STDERR_TAIL = 2000;

function argv(c: NativeConfig): string[] {
  const a = ['--host', c.host, '--port', String(c.port), '--payload', Buffer.from(c.payload).toString('hex'), '--timeout-ms', String(c.timeoutMs)];
  if (c.localAddress) a.push('--local', c.localAddress);
  if (c.expect.bytes === null) a.push('--expect-any');
  else a.push('--expect', c.expect.bytes.toString('hex'));
  // a body whose string the byte check cannot stand in for: every response is judged here
  if (!c.expect.quick) a.push('--no-quick');
  if (c.maxRequests !== Number.POSITIVE_INFINITY) a.push('--requests', String(c.maxRequests));
  if (c.durationMs !== Number.POSITIVE_INFINITY) a.push('--duration-ms', String(c.durationMs));
  a.push('--concurrency', c.concurrency.join(','));
  return a;
}

/** Start the engine's process; resolves once it is ready to go. */
export async function startNative(c: NativeConfig, sink: NativeSink): Promise<NativeEngine> {
  const path = c.path ?? NATIVE_ENGINE_PATH;
  const child: ChildProcess = spawn(path, argv(c), { stdio: ['pipe', 'pipe', 'pipe'] });
  const tags: string[] = [];
  let inFlight = 0;
  let stderr = '';
  let pending: Buffer | null = null;
  let aborted = 0;
  let finished = false;
  let exited = false;

  let resolveReady!: () => void;
  let rejectReady!: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  let resolveDone!: (reason: number) => void;
  let rejectDone!: (e: Error) => void;
  const done = new Promise<number>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  done.catch(() => undefined);
  const exitedP = new Promise<void>((res) => child.once('close', () => res()));
  const fail = (e: Error): void => {
    if (finished) return;
    finished = true;
    rejectReady(e);
    rejectDone(e);
  };

  const records = (b: Buffer, from: number, to: number): void => {
    inFlight = b.readUInt32LE(from);
    for (let p = from + 4; p < to;) {
      const start = b.readDoubleLE(p);
      const latency = b.readDoubleLE(p + 8);
      let outcome = b[p + 16]!;
      const kind = b[p + 17]!;
      const tagId = b.readInt32LE(p + 20);
      const raw = b.readUInt32LE(p + 24);
      let tag = tagId < 0 ? undefined : tags[tagId];
      p += RECORD_BYTES;
      if (kind === KIND_JUDGE || kind === KIND_RESET_AFTER) {
        const problem = responseProblem(b.subarray(p, p + raw), raw, c.expect);
        if (kind === KIND_JUDGE) {
          outcome = problem === null ? OUTCOME_OK : OUTCOME_BAD_RESPONSE;
          tag = problem ?? undefined;
        } else if (problem === null) {
          // engine.ts's failed(): a RST after the whole, correct response
          outcome = OUTCOME_OK;
          tag = 'reset-after-response';
        }
        p += raw;
      }
      sink(start, latency, outcome, tag);
    }
  };

  const frames = (chunk: Buffer): void => {
    const b = pending === null ? chunk : Buffer.concat([pending, chunk]);
    pending = null;
    let off = 0;
    while (b.length - off >= FRAME_HEAD) {
      const len = b.readUInt32LE(off + 4);
      if (b.length - off < FRAME_HEAD + len) break;
      const type = b[off]!;
      const body = off + FRAME_HEAD;
      if (type === FRAME_RECORDS) records(b, body, body + len);
      else if (type === FRAME_TAG) tags[b.readUInt32LE(body)] = b.toString('latin1', body + 4, body + len);
      else if (type === FRAME_READY) resolveReady();
      else if (type === FRAME_DONE) {
        aborted = b.readUInt32LE(body);
        inFlight = 0;
        finished = true;
        resolveDone(b.readUInt32LE(body + 4));
      } else {
        fail(new Error(`load generator engine ${path}: unknown frame type ${type}`));
        child.kill('SIGKILL');
        return;
      }
      off = body + len;
    }
    if (off < b.length) pending = b.subarray(off);
  };

  child.stdout!.on('data', frames);
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString('utf8')).slice(-STDERR_TAIL);
  });
  // the engine exits by itself after "abort" or at EOF on stdin; a write after that is not an error
  child.stdin!.on('error', () => undefined);
  child.on('error', (e) => fail(new Error(`load generator engine ${path}: ${e.message}`)));
  child.on('close', (code, signal) => {
    exited = true;
    const how = signal ? `killed by ${signal}` : `exit ${code}`;
    fail(new Error(`load generator engine ${path} ended (${how}) before it was done${stderr ? `: ${stderr.trim()}` : ''}`));
  });

  const startTimer = setTimeout(() => fail(new Error(`load generator engine ${path} not ready after ${START_MS} ms`)), START_MS);
  const kill = async (): Promise<void> => {
    if (!exited && child.pid !== undefined) child.kill('SIGKILL');
    await exitedP;
  };
  try {
    await ready;
  } catch (e) {
    await kill();
    throw e;
  } finally {
    clearTimeout(startTimer);
  }
  const send = (line: string): void => {
    if (!exited) child.stdin!.write(`${line}\n`);
  };
  return {
    done,
    pid: child.pid,
    go: (t0) => send(`go ${t0}`),
    stop: () => send('stop'),
    abort: async () => {
      if (finished) return aborted;
      send('abort');
      // An engine that does not answer within a second is stuck: kill it and
      // count what it had in flight at its last batch.
      const answered = await Promise.race([done.then(() => true).catch(() => false), new Promise<boolean>((r) => setTimeout(() => r(false), 1000).unref())]);
      if (answered) return aborted;
      const n = inFlight;
      finished = true;
      await kill();
      return n;
    },
    inFlight: () => inFlight,
    dispose: async () => {
      finished = true;
      child.stdin!.end();
      // after DONE it exits by itself; otherwise EOF on stdin makes it abort and exit
      const gone = await Promise.race([exitedP.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 1000).unref())]);
      if (!gone) await kill();
    },
  };
}
