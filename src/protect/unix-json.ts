/** Newline-delimited JSON over a unix socket: the daemon's wire format, both ends. */
import type { Socket } from 'node:net';

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

/** Calls onMsg for every complete line that parses as JSON; a garbled line is skipped. */
export function onJsonLines<T>(s: Socket, onMsg: (m: T) => void): void {
  let buf = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let m: T;
      try {
        m = JSON.parse(line) as T;
      } catch {
        continue;
      }
      onMsg(m);
    }
  });
}
