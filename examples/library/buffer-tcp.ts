/**
 * A packet-level pause on one TCP flow: hold what a client sends to a server,
 * look at it, let it through one epoch at a time, then release. What `synhold
 * buffer start --dport 16200 --tcp-flags PSH/PSH` and `synhold buffer
 * list|step|release` do, from the program that owns the buffer.
 *
 *   node dist/examples/library/buffer-tcp.js NETNS
 *
 * The server and client live in this process, so it runs itself inside NETNS
 * (netns.ts). Only data segments (PSH) are held, not the handshake or ACKs.
 */
import { createConnection, createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { buffer, type HeldPacket } from 'synhold';
import { enterNetns, netnsArg } from './netns.js';

const netns = netnsArg('buffer-tcp.js NETNS');
enterNetns(netns);
const PORT = 16200;

// An echo server and a connected client, both on 127.0.0.1 inside the namespace.
let received = '';
const server = createServer((c) => c.on('data', (d) => ((received += d.toString()), c.write(d))));
server.listen(PORT, '127.0.0.1');
await once(server, 'listening');
const client: Socket = createConnection({ host: '127.0.0.1', port: PORT, noDelay: true });
await once(client, 'connect');
let echoed = '';
client.on('data', (d) => (echoed += d.toString()));
console.log(`connected: 127.0.0.1:${client.localPort} -> 127.0.0.1:${PORT}`);

/** Waits (at most 5 s) until `fn` is true. */
async function until(what: string, fn: () => boolean | Promise<boolean>): Promise<void> {
  for (const end = Date.now() + 5000; !(await fn()); await sleep(10)) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
}
const show = (p: HeldPacket) => `${p.proto} ${p.src}:${p.sport} > ${p.dst}:${p.dport} ${p.flags} ${p.length} bytes`;

{
  await using b = await buffer({ netns, proto: 'tcp', dport: PORT, tcpFlags: 'PSH/PSH', maxHoldMs: 20_000 });
  console.log(`buffer: holding tcp to port ${PORT} on queue ${b.queue} (backend ${b.backend}, watchdog pid ${b.watchdogPid})`);

  client.write('hello ');
  await until('the segment held', async () => (await b.list()).heldPackets === 1);
  const held = await b.list();
  console.log(`list: ${held.heldPackets} held: ${held.packets?.map(show).join('; ')}`);
  await sleep(300);
  console.log(`server after 300 ms: ${JSON.stringify(received)}`);

  const step = await b.step();
  await until('the first epoch delivered', () => received === 'hello ');
  console.log(`step: released ${step.released}, ${step.held} still held; server got ${JSON.stringify(received)}`);

  client.write('world');
  await until('the second segment held', async () => (await b.list()).heldPackets === 1);
  const end = await b.release();
  await until('everything echoed', () => echoed === 'hello world');
  console.log(
    `release: released ${end.released} (stepped ${end.stepped} before), cause ${end.cause}, by ${end.by}; server got ${JSON.stringify(received)}, client got back ${JSON.stringify(echoed)}`,
  );
}

client.end();
server.close();
await once(server, 'close');
console.log('closed');
