/**
 * host/child.ts on this kernel: the cheap process start protect uses for the
 * hold's watchdog and the reload command. What child_process.spawn promised
 * and protect relies on, each checked from the child's side (/proc, readlink,
 * the exit status): exit codes and signals, not-found and not-executable,
 * the network namespace, fd placement, no leaked descriptors, default signal
 * dispositions, and an unref'd child not keeping Node alive.
 */
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Child, devNull, pipe, StartError } from '../../src/host/child.js';
import { withNetns } from '../helpers/netns.js';

/** Runs sh -c SCRIPT as a Child, its stdout captured through a pipe we make. */
async function sh(script: string, o: { netnsPath?: string; fds?: (out: number) => number[] } = {}): Promise<{ code: number | null; out: string }> {
  const [r, w] = pipe();
  const child = Child.start(['sh', '-c', script], { fds: o.fds ? o.fds(w) : [devNull(), w, 2], ...(o.netnsPath ? { netnsPath: o.netnsPath } : {}) });
  closeSync(w);
  const chunks: Buffer[] = [];
  const buf = Buffer.alloc(65536);
  // The child exits before we read (its output is small): read to EOF after its end.
  const end = await child.ended;
  for (;;) {
    const n = readSync(r, buf);
    if (n <= 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  closeSync(r);
  return { code: end.code, out: Buffer.concat(chunks).toString() };
}

/** Our children that exited and were never reaped (from /proc: state Z, parent us). */
function zombieChildren(): string[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        // "pid (comm) S ppid ...": comm may hold spaces, so split after its closing parenthesis.
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        return state === 'Z' && Number(ppid) === process.pid;
      } catch {
        return false;
      }
    });
}

test('exit status and death by signal are the command own', async () => {
  assert.deepEqual((await Child.start(['sh', '-c', 'exit 7']).ended).code, 7);
  const c = Child.start(['sleep', '30']);
  assert.equal(c.kill('SIGTERM'), true);
  const e = await c.ended;
  assert.equal(e.code, null);
  assert.equal(e.signal, 'SIGTERM');
  assert.equal(c.kill('SIGTERM'), false, 'a reaped child is never signalled (its pid may be reused)');
});

test('a command that cannot run throws at once: ENOENT (not found), EACCES (no x bit), ENOEXEC (not a program)', () => {
  assert.throws(
    () => Child.start(['synhold-no-such-program']),
    (e: unknown) => e instanceof StartError && e.code === 'ENOENT',
  );
  const dir = mkdtempSync(join(tmpdir(), 'synhold-child-'));
  try {
    writeFileSync(join(dir, 'plain'), 'not a program\n', { mode: 0o644 });
    writeFileSync(join(dir, 'garbage'), Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 0, 0, 0]), { mode: 0o755 });
    assert.throws(
      () => Child.start([join(dir, 'plain')]),
      (e: unknown) => e instanceof StartError && e.code === 'EACCES',
    );
    assert.throws(
      () => Child.start([join(dir, 'garbage')]),
      (e: unknown) => e instanceof StartError && e.code === 'ENOEXEC',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // No zombie left behind by the failed starts.
  assert.deepEqual(zombieChildren(), []);
});

test('PATH is searched as execvp does: a file without the x bit is passed over (EACCES if nothing else is found), the first executable one runs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-child-path-'));
  const saved = process.env.PATH;
  try {
    for (const d of ['a', 'b', 'c']) mkdirSync(join(dir, d));
    writeFileSync(join(dir, 'a', 'prog'), '#!/bin/sh\nexit 3\n', { mode: 0o644 });
    writeFileSync(join(dir, 'b', 'prog'), '#!/bin/sh\nexit 4\n', { mode: 0o755 });
    writeFileSync(join(dir, 'c', 'prog'), '#!/bin/sh\nexit 5\n', { mode: 0o755 });
    process.env.PATH = ['missing', 'a', 'b', 'c'].map((d) => join(dir, d)).join(':');
    assert.equal((await Child.start(['prog']).ended).code, 4, 'the first executable candidate, after a missing dir and a non-executable file');
    process.env.PATH = [join(dir, 'missing'), join(dir, 'a')].join(':');
    assert.throws(
      () => Child.start(['prog']),
      (e: unknown) => e instanceof StartError && e.code === 'EACCES',
    );
    process.env.PATH = join(dir, 'missing');
    assert.throws(
      () => Child.start(['prog']),
      (e: unknown) => e instanceof StartError && e.code === 'ENOENT',
    );
  } finally {
    process.env.PATH = saved;
    rmSync(dir, { recursive: true, force: true });
  }
  assert.deepEqual(zombieChildren(), []);
});

test('netnsPath runs it inside that network namespace, as nsenter would', async () => {
  await withNetns(async (ns) => {
    const ours = readlinkSync('/proc/self/ns/net');
    const inside = (await sh('readlink /proc/self/ns/net', { netnsPath: ns.path })).out.trim();
    const oracle = spawnSync('ip', ['netns', 'exec', ns.name, 'readlink', '/proc/self/ns/net'], { encoding: 'utf8' }).stdout.trim();
    assert.equal(inside, oracle);
    assert.notEqual(inside, ours);
  });
  assert.throws(
    () => Child.start(['true'], { netnsPath: '/run/netns/synhold-no-such-ns' }),
    (e: unknown) => e instanceof StartError && e.code === 'ENOENT',
  );
});

test('fds land where asked, and none of ours leaks (Node opens everything close-on-exec)', async () => {
  const extra = openSync(fileURLToPath(import.meta.url), 'r');
  try {
    // child fd 3 = our devNull, fd 4 = our `extra` (its number here is not 4).
    const r = await sh('for f in /proc/$$/fd/*; do echo "${f##*/}"; readlink "$f"; done', { fds: (out) => [devNull(), out, 2, devNull(), extra] });
    const lines = r.out.trim().split('\n');
    const fds = new Map<string, string>();
    for (let i = 0; i + 1 < lines.length; i += 2) fds.set(lines[i]!, lines[i + 1]!);
    assert.equal(fds.get('3'), '/dev/null');
    assert.equal(fds.get('4'), fileURLToPath(import.meta.url));
    // Beyond 0-4, only what this process itself would pass to any exec (fds it inherited without close-on-exec).
    const O_CLOEXEC = 0o2000000;
    const inheritable = readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return (parseInt(/flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!, 8) & O_CLOEXEC) === 0;
      } catch {
        return false;
      }
    });
    const unexpected = [...fds.keys()].filter((fd) => Number(fd) > 4 && !inheritable.includes(fd));
    assert.deepEqual(unexpected, [], `fds beyond those asked for: ${r.out}`);
  } finally {
    closeSync(extra);
  }
});

test('the child starts with default signal dispositions (Node ignores SIGPIPE; a reload command must not)', async () => {
  const r = await sh('grep -E "^Sig(Ign|Blk):" /proc/self/status');
  assert.match(r.out, /SigIgn:\s+0+\n/);
  assert.match(r.out, /SigBlk:\s+0+\n/);
});

test('blockSignals: those signals reach the program blocked (SigBlk), and one sent at once waits for it instead of killing it', async () => {
  // sleep, not sh: a shell clears its signal mask as it starts.
  const child = Child.start(['sleep', '0.3'], { fds: [devNull(), devNull(), 2], blockSignals: ['SIGTERM', 'SIGUSR1'] });
  // At once: before sleep has run a line. Blocked, it stays pending (ShdPnd: sent to the process).
  process.kill(child.pid, 'SIGTERM');
  await sleep(100);
  const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
  const field = (name: string) => BigInt(`0x${new RegExp(`^${name}:\\s+([0-9a-f]+)$`, 'm').exec(status)![1]}`);
  assert.equal(field('SigBlk'), (1n << 14n) | (1n << 9n), 'SIGTERM (15) and SIGUSR1 (10) blocked, nothing else');
  assert.equal(field('ShdPnd') & (1n << 14n), 1n << 14n, 'the SIGTERM is pending');
  const end = await child.ended;
  assert.deepEqual([end.code, end.signal], [0, null], 'not killed by the SIGTERM');
});

test('a pipe end passed as stdin reaches it, and EOF when we close ours', async () => {
  const [inR, inW] = pipe();
  const [outR, outW] = pipe();
  const child = Child.start(['cat'], { fds: [inR, outW, 2] });
  closeSync(inR);
  closeSync(outW);
  writeSync(inW, 'byte by byte');
  closeSync(inW);
  const end = await child.ended;
  const buf = Buffer.alloc(100);
  const n = readSync(outR, buf);
  closeSync(outR);
  assert.equal(end.code, 0);
  assert.equal(buf.subarray(0, n).toString(), 'byte by byte');
});

test('unref: Node exits while the child runs on; ref (the default): Node waits for it', () => {
  const mod = fileURLToPath(new URL('../../src/host/child.js', import.meta.url));
  const run = (unref: boolean) => {
    const t0 = Date.now();
    const r = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { Child } = await import(${JSON.stringify(mod)}); const { devNull } = await import(${JSON.stringify(mod)}); const c = Child.start(['sleep', '1'], { fds: [devNull(), devNull(), devNull()] }); ${unref ? 'c.unref();' : ''}`,
      ],
      { encoding: 'utf8', timeout: 10_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    return Date.now() - t0;
  };
  assert.ok(run(true) < 900, 'unref: did not wait for the child');
  assert.ok(run(false) >= 1000, 'ref: waited for the child');
});
