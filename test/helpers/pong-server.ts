/**
 * The smallest HTTP server the load generator accepts ("pong", then close), for
 * a plain `Type=simple` unit that a `systemctl restart` stops, then starts:
 *
 *   node pong-server.js HOST PORT
 *
 * It binds when it starts and closes its listener when it exits, so between the
 * stop and the next start nothing listens on PORT.
 */
import { createServer } from 'node:net';

const [host = '127.0.0.1', port = '16001'] = process.argv.slice(2);
const srv = createServer((s) => {
  s.on('error', () => undefined);
  s.once('data', () => s.end('HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\npong'));
});
srv.listen({ host, port: Number(port), backlog: 1024 });
process.once('SIGTERM', () => process.exit(0));
