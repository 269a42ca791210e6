// The network namespaces the bench creates (named synhold-bench-*), and what
// it does in them from outside: create with lo up, list the processes still
// inside, kill those by PID, delete. Only namespaces this process created are
// ever touched.
//
// Deleting a namespace does not stop the processes in it (the namespace lives
// on while any process is inside), so a worker that was killed before its own
// clean-up would leave its HAProxy daemons running: `ip netns pids` names
// them, and every process in a namespace the bench created is the bench's.

import { randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { exec, execOk } from './exec.js';
import { own, killAll, type OwnedProc } from './procs.js';
import type { KernelFeature } from './strategies/strategy.js';

export const NETNS_PREFIX = 'synhold-bench-';

export function benchNetnsName(...parts: string[]): string {
  // The creating process's PID first: a concurrent bench's namespaces are never mistaken for ours.
  return `${NETNS_PREFIX}${[String(process.pid), ...parts, randomBytes(3).toString('hex')].join('-')}`.slice(0, 60);
}

/**
 * Is this process inside the named namespace? (`ip netns add` bind-mounts the
 * namespace at /run/netns/NAME: same device and inode as /proc/self/ns/net.)
 * Comparing with PID 1's namespace instead is not possible everywhere: on
 * this project's machines /proc/1/ns/net cannot be read, even by root.
 */
export function inNetns(name: string): boolean {
  try {
    const a = statSync(`/run/netns/${name}`);
    const b = statSync('/proc/self/ns/net');
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

/** `ip netns add NAME` and `ip -n NAME link set lo up`. */
export async function addNetns(name: string): Promise<void> {
  if (!name.startsWith(NETNS_PREFIX)) throw new Error(`bench namespaces are named ${NETNS_PREFIX}*, not ${name}`);
  await execOk(['ip', 'netns', 'add', name], { timeoutMs: 20_000 });
  try {
    await execOk(['ip', '-n', name, 'link', 'set', 'lo', 'up'], { timeoutMs: 20_000 });
  } catch (e) {
    await exec(['ip', 'netns', 'delete', name], { timeoutMs: 20_000 });
    throw e;
  }
}

/** PIDs of the processes inside the namespace (`ip netns pids NAME`). */
export async function netnsPids(name: string): Promise<number[]> {
  const r = await exec(['ip', 'netns', 'pids', name], { timeoutMs: 20_000 });
  return r.stdout
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number)
    .filter((p) => p !== process.pid);
}

/** Stop every process still inside (TERM, then KILL, by PID), then delete the namespace. Returns the PIDs it had to stop. */
export async function deleteNetns(name: string): Promise<number[]> {
  if (!name.startsWith(NETNS_PREFIX)) throw new Error(`refusing to delete ${name}: not a bench namespace`);
  const stopped: number[] = [];
  for (let round = 0; round < 3; round++) {
    const procs = (await netnsPids(name)).map(own).filter((p): p is OwnedProc => p !== null);
    if (procs.length === 0) break;
    stopped.push(...procs.map((p) => p.pid));
    await killAll(procs, { sig: round === 0 ? 'SIGTERM' : 'SIGKILL', graceMs: 2000 });
    await sleep(50);
  }
  await exec(['ip', 'netns', 'delete', name], { timeoutMs: 20_000 });
  return stopped;
}

export interface FeatureProbe {
  /** true when the kernel has it */
  ok: boolean;
  detail: string;
}

/**
 * What this kernel's traffic control can do, asked of the kernel itself with
 * `tc` in a scratch namespace (never on the real lo: a new plug starts
 * plugged): a 4-band prio root, and a plug under its fourth band, the seed's
 * topology. The namespace, and everything in it, is deleted afterwards.
 */
export async function probeKernelFeatures(): Promise<Record<KernelFeature, FeatureProbe>> {
  const name = benchNetnsName('probe');
  await addNetns(name);
  try {
    const prio = await exec(['tc', '-n', name, 'qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'prio', 'bands', '4'], { timeoutMs: 20_000 });
    const plugArgv =
      prio.code === 0
        ? ['tc', '-n', name, 'qdisc', 'add', 'dev', 'lo', 'parent', '1:4', 'handle', '40:', 'plug', 'limit', '1000']
        : ['tc', '-n', name, 'qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'plug', 'limit', '1000'];
    const plug = await exec(plugArgv, { timeoutMs: 20_000 });
    const say = (r: typeof prio, kind: string): FeatureProbe =>
      r.code === 0
        ? { ok: true, detail: `\`tc qdisc add ... ${kind}\` works` }
        : { ok: false, detail: `\`tc qdisc add ... ${kind}\`: ${(r.stderr.trim() || r.error || `exit ${r.code}`).split('\n')[0]}` };
    return { sch_prio: say(prio, 'prio'), sch_plug: say(plug, 'plug') };
  } finally {
    await deleteNetns(name);
  }
}
