// Small misbehaving TCP servers on 127.0.0.1 (free ports), to drive the load
// generator into each outcome it must tell apart.

import { createServer, type Server, type Socket } from 'node:net';
import type { TestContext } from 'node:test';

export interface TestServer {
  port: number;
  /** remote addresses of accepted connections */
  peers: string[];
  close(): Promise<void>;
}

/** A server whose connection handler is `onConn`; every socket is destroyed on close(). */
export function tcpServer(onConn: (s: Socket) => void, host = '127.0.0.1'): Promise<TestServer> {
  return new Promise((resolve, reject) => {
    const sockets = new Set<Socket>();
    const peers: string[] = [];
    const srv: Server = createServer((s) => {
      sockets.add(s);
      peers.push(s.remoteAddress ?? '');
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
      onConn(s);
    });
    srv.on('error', reject);
    srv.listen({ host, port: 0, backlog: 1024 }, () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      resolve({
        port,
        peers,
        close: () =>
          new Promise<void>((r) => {
            for (const s of sockets) s.destroy();
            srv.close(() => r());
          }),
      });
    });
  });
}

/** A server answering "pong" on [::1]; where lo has no ::1, undefined, and the test is marked skipped, saying why. */
export async function pongOnIpv6(t: TestContext): Promise<TestServer | undefined> {
  try {
    return await tcpServer((s) => {
      s.once('data', () => s.end('HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong'));
    }, '::1');
  } catch (e) {
    t.skip(`no ::1 here: ${(e as Error).message}`);
    return undefined;
  }
}

/** Reads the request, then answers `response` (raw bytes) and closes. */
export function rawHttpServer(response: string): Promise<TestServer> {
  return tcpServer((s) => {
    let got = '';
    s.on('data', (d) => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n')) s.end(response);
    });
  });
}
