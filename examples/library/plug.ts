/**
 * The Plug control API: one sch_plug qdisc driven in-process (HAProxy's
 * contrib/plug_qdisc.c and more). Needs a kernel with sch_plug: this one runs in
 * the kernel lab (test/lab-guest/examples.test.ts). Each step names its tc equivalent.
 *
 *   node dist/examples/library/plug.js NETNS
 *
 * The plug becomes the root qdisc of the namespace's lo, so every packet on lo
 * goes through it; the example sends UDP datagrams to a socket of its own, so it
 * runs itself inside NETNS (netns.ts).
 */
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { openRtnl, Plug } from 'synhold';
import { enterNetns, netnsArg } from './netns.js';

const netns = netnsArg('plug.js NETNS');
enterNetns(netns);

let got = 0;
const sink = createSocket('udp4').on('message', () => got++);
sink.bind(16400, '127.0.0.1');
await once(sink, 'listening');
const sender = createSocket('udp4');
const send = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise<void>((ok, fail) => sender.send(Buffer.alloc(100), 16400, '127.0.0.1', (e) => (e ? fail(e) : ok())));
};
async function until(what: string, fn: () => boolean): Promise<void> {
  for (const end = Date.now() + 10_000; !fn(); await sleep(10)) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
}

const rt = openRtnl(netns);
try {
  // `tc qdisc add dev lo root handle 1: plug limit 1048576`, then release_indefinite (a new plug starts plugged).
  const plug = new Plug(rt, { dev: 'lo', parent: 0xffffffff /* root */, handle: 0x10000 /* 1: */ });
  console.log(`attach: created ${await plug.attach()}`);
  await send(2);
  await until('2 datagrams through', () => got === 2);
  console.log(`released plug: 2 sent, ${got} received`);

  await plug.buffer(); // tc qdisc change dev lo root handle 1: plug block
  await send(3);
  await sleep(300);
  const s1 = await plug.stats(); // tc -s qdisc show dev lo
  console.log(`buffer: 3 sent, ${got - 2} received, held ${s1.heldPackets} packets (${s1.heldBytes} bytes)`);

  await plug.buffer(); // a second epoch starts: what came before it is epoch 1
  await send(1);
  await plug.releaseOne(); // tc qdisc change ... plug release_one
  await until('epoch 1 delivered', () => got === 5);
  await sleep(200);
  console.log(`releaseOne: ${got - 2} received, still held ${(await plug.stats()).heldPackets}`);

  await plug.releaseIndefinite(); // tc qdisc change ... plug release_indefinite
  await until('everything delivered', () => got === 6);
  console.log(`releaseIndefinite: ${got - 2} received, still held ${(await plug.stats()).heldPackets}`);

  await plug.setLimit(300); // tc qdisc change ... plug limit 300
  await plug.buffer();
  await send(5);
  await sleep(200);
  const s2 = await plug.stats();
  console.log(`setLimit(300): 5 sent while plugged, held ${s2.heldPackets} (${s2.heldBytes} bytes), dropped ${s2.drops}`);
  await plug.releaseIndefinite();

  await plug.delete(); // tc qdisc del dev lo root handle 1:
  console.log('delete: done');
} finally {
  rt.close();
  sink.close();
  sender.close();
}
