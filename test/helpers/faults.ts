/**
 * The fault-matrix harness: a hold in a fresh namespace with a client held in
 * it, the hold's processes found by PID, a fault applied (SIGKILL or SIGSTOP to
 * one or more of them, at a phase chosen with SYNHOLD_FAILPOINT), and the
 * client's connect time as the oracle of when the hold really ended. Every
 * process started here is killed by PID at the end.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { readKernelQueueStats } from '../../src/nfqueue/proc.js';
import { NfQueue } from '../../src/nfqueue/nfnetlink_queue.js';
import { synhold, synholdAsync, type CliResult } from './cli.js';
import type { TestNetns } from './netns.js';
import { startClient, type ClientResult } from './tcp.js';

export const PORT = 16000;

/** Child pids of a process, from /proc (all its threads). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
      if (text) out.push(...text.split(' ').map(Number));
    }
  } catch {
    // gone
  }
  return out;
}

export function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Process state letter (R, S, T, Z...), or '' if gone. */
export function stateOf(pid: number): string {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
  } catch {
    return '';
  }
}

export async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Packets the namespace's queue holds now (queue_total), from /proc: not synhold's own bookkeeping. */
export async function queueHeld(ns: TestNetns, queue = 7001): Promise<number> {
  const q = (await readKernelQueueStats(ns.name)).find((s) => s.queue === queue);
  return q?.queueTotal ?? 0;
}

/**
 * Whether a queue still holds every packet it was ever given (queue_total equals id_sequence, the
 * last id handed out since its bind): none was dropped under it, say by a deleted hook. Undefined when unbound.
 */
export async function queueKeptAll(ns: TestNetns, queue: number): Promise<{ held: number; given: number } | undefined> {
  const q = (await readKernelQueueStats(ns.name)).find((s) => s.queue === queue);
  return q && { held: q.queueTotal, given: q.idSequence };
}

/** Whether a queue is bound in the namespace at all. */
export async function queueBound(ns: TestNetns, queue = 7001): Promise<boolean> {
  return (await readKernelQueueStats(ns.name)).some((s) => s.queue === queue);
}

export interface RunningHold {
  /** The owner: protect, or the daemon. */
  ownerPid: number;
  watchdogPid: number;
  /** protect itself (the client of the daemon, or the owner). */
  protectPid: number;
  protectDone: Promise<CliResult>;
  startedAt: number;
  /** pids to kill at the end (CMD and anything else started). */
  cleanup: number[];
}

/**
 * Starts `synhold protect` with a CMD that runs until killed (its pid is
 * cleaned up), and waits until the hold is on and a client's SYN is held by it.
 * `daemonPid`: hold through that daemon.
 */
export async function holdWithClient(
  ns: TestNetns,
  o: { maxHold: string; failpoint?: 'held' | 'releasing'; daemonPid?: number; commandSeconds?: number; steering?: 'always' | 'while-holding' },
): Promise<RunningHold & { client: Promise<ClientResult> }> {
  const startedAt = Date.now();
  const env: Record<string, string> = o.failpoint ? { SYNHOLD_FAILPOINT: o.failpoint } : {};
  const p = synholdAsync(['--netns', ns.name, 'protect', '--max-hold', o.maxHold, '--', 'sleep', String(o.commandSeconds ?? 30)], env);
  const owner = o.daemonPid ?? p.pid;
  const watchdogPid = await until('the watchdog', () => childrenOf(owner).find((c) => commOf(c) === 'synhold-watchdo'));
  // The kernel hold is on once the queue is bound (nfqueue) - or the failpoint stopped protect after it.
  await until('the queue to be bound', () => queueBound(ns));
  // With steering while-holding the table comes right after the bind: a SYN sent between them would pass.
  if (o.steering === 'while-holding') await until('the hold tables', () => holdTables(ns).length > 0);
  const stopped = () => until(`the owner to stop at failpoint ${o.failpoint}`, () => stateOf(owner) === 'T', 15_000);
  if (o.failpoint === 'held') await stopped();
  const c = startClient(ns.name, '127.0.0.1', PORT);
  await until('the SYN to be held', async () => (await queueHeld(ns)) >= 1);
  // 'releasing' is reached when CMD exits (commandSeconds), with the SYN still held.
  if (o.failpoint === 'releasing') await stopped();
  const cleanup = childrenOf(p.pid).filter((c2) => commOf(c2) === 'sleep');
  return { ownerPid: owner, watchdogPid, protectPid: p.pid, protectDone: p.done, startedAt, cleanup, client: c.result };
}

export function kill(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Kills whatever a cell left running: SIGCONT first, so that stopped processes can die. */
export function reap(pids: number[]): void {
  for (const pid of pids) {
    kill(pid, 'SIGKILL');
    kill(pid, 'SIGCONT');
  }
}

export function setupNfqueue(ns: TestNetns, steering: 'always' | 'while-holding' = 'always'): void {
  const r = synhold(['--netns', ns.name, 'setup', '--port', String(PORT), '--backend', 'nfqueue', '--steering', steering]);
  if (r.status !== 0) throw new Error(`setup failed: ${r.stderr}`);
}

/** synhold's hold tables in the namespace, as `nft list tables` names them (the oracle for --steering while-holding). */
export function holdTables(ns: TestNetns): string[] {
  return ns
    .exec('nft', ['list', 'tables'])
    .split('\n')
    .filter((l) => /^table \S+ synhold-q\d+$/.test(l.trim()))
    .map((l) => l.trim());
}

/** The queue another NFQUEUE user of the namespace binds in these tests. */
export const OTHER_QUEUE = 4242;

/**
 * Another NFQUEUE user in the namespace: SYNs to `port` go to its queue OTHER_QUEUE (no bypass),
 * where this process holds them until `q.acceptAll()`. The rule is its own iptables rule.
 */
export async function otherQueueUser(ns: TestNetns, port: number): Promise<{ q: NfQueue; rebind(): Promise<void>; close(): Promise<void> }> {
  ns.exec('iptables', ['-t', 'raw', '-A', 'PREROUTING', '-p', 'tcp', '--syn', '--dport', String(port), '-j', 'NFQUEUE', '--queue-num', String(OTHER_QUEUE)]);
  const o = {
    q: await NfQueue.bind({ queue: OTHER_QUEUE, netns: ns.name }),
    // acceptAll leaves the queue letting everything through: binding again holds again.
    async rebind() {
      await o.close();
      o.q = await NfQueue.bind({ queue: OTHER_QUEUE, netns: ns.name });
    },
    async close() {
      await o.q.unbind().catch(() => undefined);
      o.q.close();
    },
  };
  return o;
}
