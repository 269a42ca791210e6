/**
 * How a one-shot `synhold buffer step|list|release` reaches the process that owns
 * the buffer: newline-delimited JSON over a unix socket in the buffer's state
 * directory (paths.ts), one request and one reply per connection. The same wire
 * format as the daemon's (src/protect/unix-json.ts), which this reuses.
 *
 * The socket is the owner's; the buffer's lock says whether an owner lives:
 * a socket nobody answers while the lock is free is what a killed owner left.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { BufferGoneError, BufferTimeoutError, SynholdError } from '../model/errors.js';
import { connectUnix, onJsonLines } from '../protect/unix-json.js';
import type { BufferBackend, BufferHeld, BufferReleased, StepOptions, StepResult } from './engine.js';

export type ControlRequest = { op: 'list' } | { op: 'info' } | ({ op: 'step' } & StepOptions) | { op: 'release' };

export interface BufferInfo {
  queue: number;
  backend: BufferBackend;
  filter: string;
  since: number;
  deadline: number;
  watchdogPid: number;
  ownerPid: number;
}

export type ControlReply =
  | { ok: true; op: 'list'; info: BufferInfo; held: BufferHeld }
  | { ok: true; op: 'info'; info: BufferInfo }
  | { ok: true; op: 'step'; result: StepResult }
  | { ok: true; op: 'release'; result: BufferReleased }
  | { ok: false; code: string; message: string };

/** What the server needs of the owner. */
export interface Controlled {
  list(): Promise<BufferHeld>;
  step(o: StepOptions): Promise<StepResult>;
  release(): Promise<BufferReleased>;
  describe(): BufferInfo;
}

export interface ControlServer {
  close(): Promise<void>;
}

/** How long a client waits for the owner (a stopped owner never answers). */
const REPLY_TIMEOUT_MS = 5000;

async function answer(owner: Controlled, req: ControlRequest): Promise<ControlReply> {
  switch (req.op) {
    case 'list':
      return { ok: true, op: 'list', info: owner.describe(), held: await owner.list() };
    case 'info':
      return { ok: true, op: 'info', info: owner.describe() };
    case 'step': {
      const o: StepOptions = {};
      if (req.count !== undefined) o.count = req.count;
      if (req.drop) o.drop = true;
      return { ok: true, op: 'step', result: await owner.step(o) };
    }
    case 'release':
      return { ok: true, op: 'release', result: await owner.release() };
    default:
      return { ok: false, code: 'ERR_BAD_INPUT', message: `unknown request ${JSON.stringify((req as { op?: unknown }).op)}` };
  }
}

function handle(owner: Controlled, s: Socket): void {
  s.on('error', () => undefined);
  let busy = false;
  onJsonLines<ControlRequest>(s, (req) => {
    // One request per connection: a second line is a client bug, not a second command.
    if (busy) return;
    busy = true;
    answer(owner, req).then(
      (reply) => s.end(`${JSON.stringify(reply)}\n`),
      (e: unknown) => {
        const err = e as SynholdError;
        s.end(`${JSON.stringify({ ok: false, code: err.code ?? 'ERR_INTERNAL', message: err.message ?? String(e) })}\n`);
      },
    );
  });
}

/** Listens on `path` (a stale socket file there is removed: the caller holds the buffer's lock). */
export async function serveControl(path: string, owner: Controlled): Promise<ControlServer> {
  rmSync(path, { force: true });
  const server: Server = createServer((s) => handle(owner, s));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  // The queue keeps the owner alive while it holds; the socket alone must not.
  server.unref();
  return {
    // Stops accepting; a connection still open (the client waiting for its release reply) gets its answer after this.
    close: () => {
      server.close();
      return Promise.resolve();
    },
  };
}

/**
 * Sends one request and waits for its reply; undefined when nobody listens on
 * the socket. A reply that does not come in time is an error (a stopped owner).
 */
export async function request(path: string, req: ControlRequest): Promise<ControlReply | undefined> {
  const s = await connectUnix(path, 500);
  if (!s) return undefined;
  return new Promise<ControlReply>((resolve, reject) => {
    const t = setTimeout(() => {
      s.destroy();
      reject(new BufferTimeoutError(`the buffer's owner did not answer within ${REPLY_TIMEOUT_MS} ms (stopped?)`));
    }, REPLY_TIMEOUT_MS);
    s.on('error', () => undefined);
    onJsonLines<ControlReply>(s, (m) => {
      clearTimeout(t);
      s.destroy();
      resolve(m);
    });
    s.once('close', () => {
      clearTimeout(t);
      reject(new BufferGoneError("the buffer's owner closed the connection without answering"));
    });
    s.write(`${JSON.stringify(req)}\n`);
  });
}
