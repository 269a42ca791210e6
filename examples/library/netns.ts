/**
 * The examples' one piece of plumbing: an example whose own sockets must be in
 * the namespace (a TCP server and client, UDP datagrams) runs itself again
 * inside it with `ip netns exec NS` when it was started outside. The library
 * calls need none of this: they take `netns` and open their netlink sockets there.
 */
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';

/** Returns when this process is in /run/netns/NAME; otherwise runs this same command inside it and exits with its status. */
export function enterNetns(name: string): void {
  const here = statSync('/proc/self/ns/net').ino;
  const there = statSync(`/run/netns/${name}`).ino;
  if (here === there) return;
  const r = spawnSync('ip', ['netns', 'exec', name, process.execPath, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

/** The namespace from argv (argv[2]), or a usage line and exit 2. */
export function netnsArg(usage: string): string {
  const ns = process.argv[2];
  if (!ns || ns.startsWith('-')) {
    process.stderr.write(`usage: ${usage}\n`);
    process.exit(2);
  }
  return ns;
}
