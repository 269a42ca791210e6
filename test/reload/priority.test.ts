/**
 * protect's loop holds at real-time priority (src/host/sched.ts) and nothing else does: the reload
 * command runs at normal priority (SCHED_RESET_ON_FORK), the thread is back to its policy after the
 * release, `--priority normal` leaves it alone, and without CAP_SYS_NICE or with one CPU the hold goes
 * on at normal priority and says why. Oracle: the kernel's own /proc/PID/stat (fields 40 rt_priority and 41
 * policy), read by CMD for its parent (protect) and itself while the hold is on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { setupNfqueue } from '../helpers/faults.js';
import { CLI, synhold } from '../helpers/cli.js';
import { protect, type ProtectResult } from '../../src/protect/protect.js';
import { spawnSync } from 'node:child_process';

interface Sched {
  rtPriority: number;
  policy: number;
}

/** Fields 40 and 41 of a /proc/PID/stat line (counted after the command name, which may hold spaces). */
function schedOf(statLine: string): Sched {
  const f = statLine.slice(statLine.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): field N is f[N - 3].
  return { rtPriority: Number(f[37]), policy: Number(f[38]) };
}

/** CMD: protect's (its parent's) scheduling and its own, as the kernel reports them during the hold. */
function probeCommand(file: string): string[] {
  return ['sh', '-c', `cat /proc/$PPID/stat /proc/$$/stat > ${file}`];
}

function readProbe(file: string): { protect: Sched; command: Sched } {
  const [p, c] = readFileSync(file, 'utf8').trim().split('\n');
  return { protect: schedOf(p!), command: schedOf(c!) };
}

const FIFO = { rtPriority: 1, policy: 1 };
const NORMAL = { rtPriority: 0, policy: 0 };

const thisThread = (): Sched => schedOf(readFileSync('/proc/self/stat', 'utf8'));

/** A fresh namespace set up with nfqueue and a file for the probe; torn down and removed afterwards. */
async function withProbe(fn: (ns: TestNetns, file: string) => Promise<void>): Promise<void> {
  await withNetns(async (ns) => {
    setupNfqueue(ns);
    const dir = mkdtempSync(join(tmpdir(), 'synhold-prio-'));
    try {
      await fn(ns, join(dir, 'sched'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
}

/** `synhold --json protect [ARGS] -- probe`, run under `wrapper` (setpriv, taskset: argv before node), exit 0 asserted; its result. */
function protectCli(wrapper: string[], ns: TestNetns, file: string, args: string[] = []): ProtectResult {
  const argv = [process.execPath, CLI, '--netns', ns.name, '--json', 'protect', ...args, '--', ...probeCommand(file)];
  const all = [...wrapper, ...argv];
  const r = spawnSync(all[0]!, all.slice(1), { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as ProtectResult;
}

test('protect holds at SCHED_FIFO 1, CMD runs normal, and the thread is normal again after the release', async () => {
  await withProbe(async (ns, file) => {
    const r = await protect({ command: probeCommand(file), netns: ns.name, maxHoldMs: 5000, lockWaitMs: 0 });
    assert.equal(r.exitCode, 0);
    assert.deepEqual(r.priority, { realtime: true, reason: undefined });
    const seen = readProbe(file);
    assert.deepEqual(seen.protect, FIFO, 'protect during the hold');
    assert.deepEqual(seen.command, NORMAL, 'CMD (SCHED_RESET_ON_FORK)');
    // In-process: protect ran on this very thread (the thread group leader), which is normal again.
    assert.deepEqual(thisThread(), NORMAL, 'this thread after protect returned');
  });
});

test('a failing CMD and a signal still end with the thread back at its priority', async () => {
  await withProbe(async (ns) => {
    const failed = await protect({ command: ['sh', '-c', 'exit 3'], netns: ns.name, maxHoldMs: 5000, lockWaitMs: 0 });
    assert.equal(failed.exitCode, 3);
    assert.deepEqual(thisThread(), NORMAL);
    const ac = new AbortController();
    const aborted = protect({ command: ['sleep', '30'], netns: ns.name, maxHoldMs: 5000, lockWaitMs: 0, signal: ac.signal });
    setTimeout(() => ac.abort(), 200);
    const r: ProtectResult = await aborted;
    assert.equal(r.exitCode, 128 + 15);
    assert.deepEqual(thisThread(), NORMAL);
  });
});

test('--priority normal leaves protect at its priority (a bad value: test/cli/bad-input)', async () => {
  await withProbe(async (ns, file) => {
    assert.equal(protectCli([], ns, file, ['--priority', 'normal']).priority, undefined);
    assert.deepEqual(readProbe(file).protect, NORMAL);
  });
});

test('without CAP_SYS_NICE protect holds at normal priority, runs CMD and says why', async () => {
  await withProbe(async (ns, file) => {
    // Root without CAP_SYS_NICE: dropped from the bounding set, so the exec'd node has it in no set.
    const result = protectCli(['setpriv', '--bounding-set', '-sys_nice', '--inh-caps', '-sys_nice'], ns, file);
    assert.equal(result.priority?.realtime, false);
    assert.match(result.priority?.reason ?? '', /not permitted \(CAP_SYS_NICE\)/);
    assert.equal(result.releaseCause, 'command-exited');
    assert.deepEqual(readProbe(file).protect, NORMAL);
  });
});

test('on one CPU (taskset) protect holds at normal priority, so its polls leave the CPU to the reload command', async () => {
  await withProbe(async (ns, file) => {
    const result = protectCli(['taskset', '-c', '0'], ns, file);
    assert.deepEqual(result.priority, { realtime: false, reason: 'one CPU: a real-time loop would take it from the reload command' });
    assert.deepEqual(readProbe(file).protect, NORMAL);
  });
});

test('two protect() calls of one process that overlap share the raise: the first to end leaves the other real-time', async () => {
  await withProbe(async (nsA, file) => {
    await withProbe(async (nsB) => {
      // A ends first, B reads this thread's scheduling after that, while it still holds.
      const a = protect({ command: ['sleep', '0.4'], netns: nsA.name, maxHoldMs: 5000, lockWaitMs: 0 });
      await new Promise((r) => setTimeout(r, 100));
      const b = protect({ command: ['sh', '-c', `sleep 1.2; ${probeCommand(file)[2]}`], netns: nsB.name, maxHoldMs: 5000, lockWaitMs: 0 });
      const ra = await a;
      assert.equal(ra.exitCode, 0);
      assert.equal(ra.priority?.realtime, true);
      const rb = await b;
      assert.equal(rb.exitCode, 0);
      assert.ok(rb.commandMs! > ra.commandMs! + 100, `B's CMD ended after A's (${rb.commandMs} vs ${ra.commandMs} ms)`);
      assert.deepEqual(readProbe(file).protect, FIFO, 'still real-time for B after A ended');
      assert.deepEqual(thisThread(), NORMAL, 'normal once both ended');
    });
  });
});
