/** Newline-delimited JSON over a unix socket: the daemon's wire format, both ends. */
import type { Socket } from 'node:net';
import { native, type NativeSocketHandle } from '../native/addon.js';

/**
 * protect's end of a daemon connection, on the native addon rather than node:net: protect runs
 * once per reload, and loading node:net was 20-37 ms of its run in the kernel lab
 * (docs/PROTECT-COST.md). Keeps the process alive while open, as a net.Socket does.
 */
export class LineConnection<In> {
  readonly closed: Promise<void>;
  private isClosed = false;
  private onClosed: () => void = () => undefined;
  private onMsg: (m: In) => void = () => undefined;
  private readonly feed = jsonLineReader<In>(
    (m) => this.onMsg(m),
    () => this.isClosed,
  );

  private constructor(private readonly handle: NativeSocketHandle) {
    this.closed = new Promise((resolve) => (this.onClosed = resolve));
    native().watch(handle, () => this.readable());
    native().setRef(handle, true);
  }

  /** Connected, or undefined when nobody listens at path (or not within timeoutMs). */
  static connect<In>(path: string, timeoutMs: number): LineConnection<In> | undefined {
    const h = native().connectUnix(path, timeoutMs);
    return h ? new LineConnection<In>(h) : undefined;
  }

  /** Every complete line that parses as JSON goes to cb; a garbled line is skipped. */
  onMessage(cb: (m: In) => void): void {
    this.onMsg = cb;
  }

  /** False when the connection is (or just went) closed. */
  send(m: unknown): boolean {
    if (this.isClosed) return false;
    try {
      native().streamSend(this.handle, Buffer.from(`${JSON.stringify(m)}\n`));
      return true;
    } catch {
      this.close();
      return false;
    }
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    native().close(this.handle);
    this.onClosed();
  }

  private readable(): void {
    while (!this.isClosed) {
      let chunk: Buffer | null;
      try {
        chunk = native().streamRecv(this.handle);
      } catch {
        chunk = Buffer.alloc(0);
      }
      if (chunk === null) return;
      if (chunk.length === 0) return this.close();
      this.feed(chunk);
    }
  }
}

/** Connects, or resolves undefined (no daemon there) within timeoutMs. */
export async function connectUnix(path: string, timeoutMs: number): Promise<Socket | undefined> {
  // Loaded here, not at start: protect without a daemon never needs node:net.
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const s = connect(path);
    const t = setTimeout(() => {
      s.destroy();
      resolve(undefined);
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      resolve(s);
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(undefined);
    });
  });
}

/**
 * A byte stream's newline-delimited JSON, message by message: feed it chunks; every complete line
 * that parses goes to onMsg, a garbled line is skipped. Split on bytes, not after decoding: a chunk
 * may end inside a multi-byte character. `stop` ends the loop early (the connection closed in onMsg).
 */
function jsonLineReader<T>(onMsg: (m: T) => void, stop: () => boolean = () => false): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  return (chunk) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    for (let i = pending.indexOf(10); i >= 0 && !stop(); i = pending.indexOf(10)) {
      const line = pending.subarray(0, i).toString('utf8');
      pending = pending.subarray(i + 1);
      let m: T;
      try {
        m = JSON.parse(line) as T;
      } catch {
        continue;
      }
      onMsg(m);
    }
  };
}

/** Calls onMsg for every complete line that parses as JSON; a garbled line is skipped. */
export function onJsonLines<T>(s: Socket, onMsg: (m: T) => void): void {
  s.on('data', jsonLineReader(onMsg));
}
