/**
 * A helper script's result reaches its reader whole even when the reader is slow. CI (stop 19) lost
 * a late-hold study to "Unterminated string in JSON at position 219264": the study wrote its result
 * and called process.exit at once, and a pipe takes what does not fit its buffer later, so the exit
 * cut the line short. Oracle: `wc -c` behind a reader that waits before it reads.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const HELPER = new URL('../helpers/experiment-script.js', import.meta.url).href;
const SIZE = 1 << 20; // 16 pipe buffers

test('runAsScript: a 1 MiB result read by a reader that waits 1 s arrives whole, and the script exits 0', () => {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-script-'));
  try {
    const script = join(dir, 'big-result.mjs');
    writeFileSync(script, `import { runAsScript } from ${JSON.stringify(HELPER)};\nrunAsScript(import.meta.url, async () => 'x'.repeat(${SIZE}));\n`);
    const r = spawnSync('bash', ['-c', 'set -o pipefail; "$0" "$1" | { sleep 1; wc -c; }', process.execPath, script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    // The JSON string's two quotes and the newline.
    assert.equal(Number(r.stdout.trim()), SIZE + 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
