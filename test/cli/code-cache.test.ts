/**
 * The executable's V8 code cache (src/cli/bin.ts): made by a protect run, used by the next, and
 * never a reason for a run to fail or to run code it should not trust: a corrupt cache is rejected
 * and replaced, a cache others may write is ignored, a read-only state directory means no cache.
 * Whether V8 used the cache is what bin.ts reports under SYNHOLD_DEBUG (V8's own verdict,
 * vm.Script's cachedDataRejected); the files are checked with stat.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { synhold } from '../helpers/cli.js';
import { withNetns } from '../helpers/netns.js';

function cacheState(stderr: string): string | undefined {
  return /synhold: code cache (\w+)/.exec(stderr)?.[1];
}

test('a protect run leaves a cache the next run uses; a corrupt or foreign-writable one is replaced; read-only /run or SYNHOLD_CODE_CACHE=0 runs without', async () => {
  const runDir = mkdtempSync(join(tmpdir(), 'synhold-code-cache-'));
  const env = { SYNHOLD_RUN_DIR: runDir, SYNHOLD_DEBUG: '1' };
  const cacheDir = join(runDir, 'code-cache');
  try {
    await withNetns(async (ns) => {
      assert.equal(synhold(['--netns', ns.name, 'setup', '--port', '8080', '--backend', 'nfqueue'], env).status, 0);
      const protect = (extra: Record<string, string> = {}) => {
        const r = synhold(['--netns', ns.name, 'protect', '--', 'true'], { ...env, ...extra });
        assert.equal(r.status, 0, r.stderr);
        return cacheState(r.stderr);
      };
      assert.equal(protect(), 'none');
      const [file, ...more] = readdirSync(cacheDir);
      assert.ok(file && more.length === 0, `one cache file: ${readdirSync(cacheDir).join(', ')}`);
      const path = join(cacheDir, file);
      assert.equal(statSync(cacheDir).mode & 0o777, 0o700);
      assert.equal(statSync(path).mode & 0o777, 0o600);
      const made = readFileSync(path);

      assert.equal(protect(), 'used');
      assert.deepEqual(readFileSync(path), made, 'a used cache is not rewritten');
      // Other commands load the same bundle through it.
      const st = synhold(['--netns', ns.name, 'status'], env);
      assert.equal(st.status, 0, st.stderr);
      assert.equal(cacheState(st.stderr), 'used');
      // ...and `synhold bench`, whose import() of the bench package (ESM) needs the main context's loader.
      const bench = synhold(['bench', '--help'], env);
      assert.equal(bench.status, 0, bench.stderr);
      assert.match(bench.stdout, /^usage: synhold bench/);
      assert.equal(cacheState(bench.stderr), 'used');
      assert.doesNotMatch(bench.stderr, /Warning/);

      // Corrupt: the file's checksum (native/checksum.c) rejects it before V8 sees it, the run goes
      // on, and a good one replaces it. One flipped bit, many, a truncated file, and V8's bytes
      // without synhold's header (a cache of the format before it).
      const flipped = Buffer.from(made);
      flipped[made.length >> 1] = flipped[made.length >> 1]! ^ 0x01;
      const scrambled = Buffer.from(made);
      for (let i = 64; i < scrambled.length; i += 97) scrambled[i] = scrambled[i]! ^ 0xff;
      const headerBytes = Buffer.from('synhold-code-cache-1\n').length + 8;
      for (const bad of [flipped, scrambled, made.subarray(0, made.length - 1000), made.subarray(headerBytes)]) {
        writeFileSync(path, bad);
        assert.equal(protect(), 'rejected');
        assert.notDeepEqual(readFileSync(path), bad, 'replaced');
        assert.equal(protect(), 'used');
      }

      // Writable by others: not trusted (not even read), and replaced by one that is not.
      chmodSync(path, 0o666);
      assert.equal(protect(), 'none');
      assert.equal(statSync(path).mode & 0o777, 0o600);
      assert.equal(protect(), 'used');

      // A cache of another bundle or Node.js is removed when a new one is made.
      writeFileSync(join(cacheDir, 'cli-v0.0.0-x64-1-1-1.v8'), 'old', { mode: 0o600 });
      rmSync(path);
      assert.equal(protect(), 'none');
      assert.deepEqual(readdirSync(cacheDir), [file]);

      // Turned off: nothing read or written.
      rmSync(path);
      assert.equal(protect({ SYNHOLD_CODE_CACHE: '0' }), 'off');
      assert.deepEqual(readdirSync(cacheDir), []);

      // A state directory the cache cannot be written to (a read-only bind mount, as a read-only /run):
      // the run succeeds and leaves no partial file.
      const ro = spawnSync(
        'unshare',
        [
          '-m',
          'sh',
          '-c',
          `mount --bind -o ro ${cacheDir} ${cacheDir} && "$@"`,
          'sh',
          process.execPath,
          join(import.meta.dirname, '..', '..', 'synhold.cjs'),
          '--netns',
          ns.name,
          'protect',
          '--',
          'true',
        ],
        {
          encoding: 'utf8',
          env: { ...process.env, ...env },
        },
      );
      assert.equal(ro.status, 0, ro.stderr);
      assert.equal(cacheState(ro.stderr), 'none');
      assert.deepEqual(readdirSync(cacheDir), []);
      assert.equal(synhold(['--netns', ns.name, 'teardown'], env).status, 0);
    });
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
});
