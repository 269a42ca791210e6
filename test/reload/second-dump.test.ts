/**
 * The release after a socket swap waits for a second dump of the listening table
 * (one dump is not an atomic snapshot), not for a second poll interval: with the
 * kernel's destroy notifications off and a long poll interval, protect releases
 * within a few ms of the poll that first saw the old listener gone, not a poll
 * interval later (src/protect/protect.ts). A real swap in a fresh namespace: a
 * listener with SO_REUSEPORT, then CMD starts a second one, closes the first and
 * keeps running, so that the sockets, not CMD's exit, decide. Oracle besides
 * protect's own timeline: `ss` in the namespace (the new listener is the only one).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withNetns } from '../helpers/netns.js';
import { PORT, kill, setupNfqueue, until } from '../helpers/faults.js';
import { synhold } from '../helpers/cli.js';
import { protect } from '../../src/protect/protect.js';

// A listener on PORT that shares it (SO_REUSEPORT, as HAProxy's), for at most 60 s.
const SERVER =
  'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1); ' +
  `s.bind(("127.0.0.1", ${PORT})); s.listen(64); print("ready", flush=True); time.sleep(60)`;
const POLL_MS = 400;

test(`settled sockets are dumped again at once, not after the poll interval (${POLL_MS} ms, destroy notifications off)`, async () => {
  await withNetns(async (ns) => {
    setupNfqueue(ns);
    const dir = mkdtempSync(join(tmpdir(), 'synhold-dump-'));
    const old = spawn('ip', ['netns', 'exec', ns.name, 'python3', '-c', SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
    const pids = [old.pid!];
    try {
      await new Promise((resolve) => old.stdout!.once('data', resolve));
      const pidFile = join(dir, 'new.pid');
      // CMD: the new listener, then the old one closed, then 1.5 s more of CMD, so the swap decides.
      const cmd = `python3 -c '${SERVER}' >/dev/null & echo $! > ${pidFile}; sleep 0.3; kill ${old.pid}; sleep 1.5`;
      const r = await protect({ command: ['sh', '-c', cmd], netns: ns.name, maxHoldMs: 10_000, lockWaitMs: 0, pollMs: POLL_MS, destroyEvents: false });
      pids.push(Number(readFileSync(pidFile, 'utf8')));
      assert.equal(r.exitCode, 0);
      assert.equal(r.releaseCause, 'reload-done', r.releaseReason);
      const tl = r.timeline!;
      assert.ok(tl.oldGoneMs !== undefined, JSON.stringify(tl));
      const gap = tl.releaseSentMs - tl.oldGoneMs;
      assert.ok(gap < POLL_MS / 4, `released ${gap.toFixed(1)} ms after the poll that saw the old listener gone (poll interval ${POLL_MS} ms)`);
      assert.ok(r.commandMs! > tl.releaseSentMs, 'released while CMD still ran');
      const listening = ns
        .exec('ss', ['-Hltn', `sport = :${PORT}`])
        .trim()
        .split('\n')
        .filter(Boolean);
      assert.equal(listening.length, 1, listening.join('\n'));
      await until('the old listener process to be gone', () => old.exitCode !== null || old.signalCode !== null);
    } finally {
      for (const pid of pids) kill(pid, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});
