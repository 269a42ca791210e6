/**
 * The hold lock across processes, on the real kernel's flock(2). teardown
 * removes the lock file while it holds the lock and setup makes a new one; a
 * process that opened the old file just before could otherwise lock a dead
 * inode while another locks the new file: two holders at once. Here worker
 * processes take and give back the lock while one of them keeps replacing
 * the file, and each holder claims an O_EXCL marker: a second claimant is a
 * second holder.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const LOCK_MODULE = fileURLToPath(new URL('../../src/protect/lock.js', import.meta.url));

// Each worker: take the lock (tryAcquire), claim the marker, hold for a moment, let go; again.
// The replacer also unlinks the lock file while it holds it, as teardown does.
const WORKER = `
import { existsSync, openSync, closeSync, readdirSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
const { FileLock } = await import(process.argv[1]);
const [lockPath, marker, done, replacements] = [process.argv[2], process.argv[3], process.argv[4], Number(process.argv[5])];
const end = Date.now() + 30000;
let taken = 0, clashes = 0, replaced = 0;
// A start line: the replacer begins once the others run (Node's start-up is longer than its 300 rounds).
if (replacements) { while (readdirSync(dirname(done)).filter((f) => f.startsWith('ready.')).length < 3 && Date.now() < end) await new Promise((r) => setTimeout(r, 5)); }
else writeFileSync(join(dirname(done), 'ready.' + process.pid), '');
// The replacer stops after its replacements and says so (done); the others stop when it has.
while (Date.now() < end && (replacements ? replaced < replacements : !existsSync(done))) {
  const lock = FileLock.tryAcquire(lockPath);
  if (!lock) continue;
  taken++;
  let fd;
  try { fd = openSync(marker, 'wx'); } catch { clashes++; lock.release(); continue; }
  writeSync(fd, String(process.pid));
  for (let i = 0; i < 200; i++) Math.sqrt(i);
  closeSync(fd);
  unlinkSync(marker);
  if (replacements) { unlinkSync(lockPath); replaced++; }
  lock.release();
}
if (replacements) writeFileSync(done, '');
process.stdout.write(JSON.stringify({ taken, clashes, replaced }));
`;

interface WorkerResult {
  taken: number;
  clashes: number;
  replaced: number;
}

function worker(lockPath: string, marker: string, done: string, replacements: number): Promise<WorkerResult> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['--input-type=module', '-e', WORKER, LOCK_MODULE, lockPath, marker, done, String(replacements)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    const t = setTimeout(() => c.kill('SIGKILL'), 60_000);
    c.on('close', (code) => {
      clearTimeout(t);
      if (code !== 0) reject(new Error(`worker exited ${code}`));
      else resolve(JSON.parse(out) as WorkerResult);
    });
  });
}

test('a lock file replaced under waiters never gives two holders at once', { timeout: 90_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-lock-'));
  try {
    const lockPath = join(dir, 'hold.lock');
    const marker = join(dir, 'holder');
    const done = join(dir, 'done');
    const results = await Promise.all([worker(lockPath, marker, done, 300), ...[1, 2, 3].map(() => worker(lockPath, marker, done, 0))]);
    const clashes = results.reduce((n, r) => n + r.clashes, 0);
    const taken = results.reduce((n, r) => n + r.taken, 0);
    assert.equal(results[0]!.replaced, 300, `the replacer replaced the file ${results[0]!.replaced} times in 30 s`);
    assert.ok(taken - results[0]!.taken > 100, `the others took the lock ${taken - results[0]!.taken} times`);
    assert.equal(clashes, 0, `${clashes} of ${taken} takes found another holder`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
