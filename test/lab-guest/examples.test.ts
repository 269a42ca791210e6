/**
 * examples/library/plug.ts, the Plug control API, run as a user runs it. It needs
 * sch_plug, so this runs INSIDE the kernel lab (test/lab/guest-suite.test.ts boots
 * it): a fresh namespace, the example's output, and tc's own word (`tc -s -j`)
 * that the plug is gone and lo is as before.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withNetns } from '../helpers/netns.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

test('examples/library/plug: attach, buffer, releaseOne, releaseIndefinite, setLimit, stats, delete; lo as before after', async () => {
  await withNetns(async (ns) => {
    const before = ns.tcJson(['qdisc', 'show', 'dev', 'lo']);
    const r = spawnSync(process.execPath, [join(root, 'dist/examples/library/plug.js'), ns.name], { cwd: root, encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, `plug.js exited ${r.status} (signal ${r.signal})\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    const out = r.stdout;
    assert.match(out, /^attach: created true$/m);
    assert.match(out, /^released plug: 2 sent, 2 received$/m);
    assert.match(out, /^buffer: 3 sent, 0 received, held 3 packets \(\d+ bytes\)$/m);
    assert.match(out, /^releaseOne: 3 received, still held 1$/m, 'release_one lets the first epoch go and keeps the second');
    assert.match(out, /^releaseIndefinite: 4 received, still held 0$/m);
    const lim = /^setLimit\(300\): 5 sent while plugged, held (\d+) \((\d+) bytes\), dropped (\d+)$/m.exec(out);
    assert.ok(lim, out);
    const [held, bytes, dropped] = [Number(lim[1]), Number(lim[2]), Number(lim[3])];
    assert.equal(held + dropped, 5, 'every datagram held or dropped');
    assert.ok(bytes <= 300 && dropped >= 1, `the limit held at most 300 bytes (${bytes}) and dropped the rest (${dropped})`);
    assert.match(out, /^delete: done$/m);
    assert.deepEqual(ns.tcJson(['qdisc', 'show', 'dev', 'lo']), before, 'tc: no plug left, lo as before');
    assert.equal(spawnSync('ip', ['netns', 'pids', ns.name], { encoding: 'utf8' }).stdout.trim(), '', 'no process left in the namespace');
  });
});
