/**
 * When protect releases after CMD has exited, with real HAProxy processes in a
 * fresh namespace (this kernel: the nfqueue backend; the rule is the same for
 * every backend). The cases are the ones a reload can leave behind:
 *   - a new listener up and the old process closing a little after CMD exits:
 *     keep holding until the old listener is gone;
 *   - a new listener up beside an old one that never closes (an orphan: -sf
 *     named the wrong pids): release after --settle-wait, and say why;
 *   - with --release-on exit: release at the exit, whatever the sockets say.
 * `ss` is the oracle for which listeners exist.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { synhold } from '../helpers/cli.js';
import { HAPROXY_BIN, haproxyConfig } from '../../bench/src/servers.js';

const PORT = 16000;

interface Haproxies {
  cfg: string;
  pidFile(name: string): string;
  /** every HAProxy PID written to a pidfile so far */
  pids(): number[];
  listeners(): number;
  cleanup(): void;
}

function haproxies(ns: TestNetns): Haproxies {
  const dir = mkdtempSync(join(tmpdir(), 'synhold-rules-'));
  const cfg = join(dir, 'haproxy.cfg');
  // The bench's HAProxy configuration; only its listening socket matters here.
  writeFileSync(
    cfg,
    haproxyConfig({ dir, host: '127.0.0.1', port: PORT, backendHost: '127.0.0.1', backendPort: 1, maxconn: 100, hardStopAfterS: 30, threads: 1 }),
  );
  const names = new Set<string>();
  const h: Haproxies = {
    cfg,
    pidFile: (name) => {
      names.add(name);
      return join(dir, `${name}.pid`);
    },
    pids: () =>
      [...names].flatMap((n) => {
        const f = join(dir, `${n}.pid`);
        return existsSync(f) ? readFileSync(f, 'utf8').split(/\s+/).filter(Boolean).map(Number) : [];
      }),
    listeners: () =>
      ns
        .exec('ss', ['-Hltn', `sport = :${PORT}`])
        .split('\n')
        .filter((l) => l.trim()).length,
    cleanup: () => {
      for (const pid of h.pids()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return h;
}

/** "held 123.4 ms (... ; REASON); command exited 0" -> [ms, reason] */
function summary(stderr: string): { ms: number; reason: string } {
  const m = /^synhold: held ([\d.]+) ms \(\d+ SYNs released, \d+ dropped; (.*)\); command exited 0$/m.exec(stderr);
  assert.ok(m, `no summary line in: ${stderr}`);
  return { ms: Number(m[1]), reason: m[2]! };
}

test('after CMD exits: an old listener closing 400 ms later is waited for; one that never closes is released at --settle-wait; --release-on exit releases at once', async () => {
  await withNetns(async (ns) => {
    const h = haproxies(ns);
    try {
      assert.equal(synhold(['--netns', ns.name, 'setup', '--port', String(PORT)]).status, 0);
      ns.exec(HAPROXY_BIN, ['-f', h.cfg, '-p', h.pidFile('a'), '-D']);
      assert.equal(h.listeners(), 1);
      const [oldPid] = h.pids();

      // Closing late: CMD starts the new process without -sf and exits; the old one
      // is told to stop (SIGUSR1, what -sf sends) 400 ms after CMD's exit.
      const called = Date.now();
      const late = synhold([
        '--netns',
        ns.name,
        '--json',
        'protect',
        '--max-hold',
        '10s',
        '--',
        'sh',
        '-c',
        `${HAPROXY_BIN} -f ${h.cfg} -p ${h.pidFile('b')} -D && { (sleep 0.4; kill -USR1 ${oldPid}) >/dev/null 2>&1 & }`,
      ]);
      const returned = Date.now();
      assert.equal(late.status, 0, late.stderr);
      const s1 = summary(late.stderr);
      assert.match(s1.reason, /replaced 1 old listener, after the command exited/);
      assert.ok(s1.ms >= 400, `released after ${s1.ms} ms, before the old listener closed`);
      assert.ok(s1.ms < 2000, `held ${s1.ms} ms: the settle rule should have fired at once`);
      // --json's timeline: the new listener first, the old one gone >= 400 ms later, the release right after.
      const j = JSON.parse(late.stdout) as {
        holdStartedAt?: string;
        holdMs?: number;
        timeline: { newListenerMs?: number; oldGoneMs?: number; releaseSentMs: number };
      };
      const tl = j.timeline;
      // The hold's window on the wall clock (to place it beside other logs): inside the call, as long as holdMs.
      const began = Date.parse(j.holdStartedAt ?? '');
      assert.ok(began >= called && began + j.holdMs! <= returned, `hold ${j.holdStartedAt} + ${j.holdMs} ms outside the call [${called}, ${returned}]`);
      assert.ok(tl.newListenerMs !== undefined && tl.oldGoneMs !== undefined, JSON.stringify(tl));
      assert.ok(tl.oldGoneMs - tl.newListenerMs >= 400, `old listener gone ${tl.oldGoneMs - tl.newListenerMs} ms after the new one appeared`);
      assert.ok(tl.releaseSentMs >= tl.oldGoneMs && tl.releaseSentMs - tl.oldGoneMs < 100, `release sent ${tl.releaseSentMs - tl.oldGoneMs} ms after the swap`);
      await sleep(100);
      assert.equal(h.listeners(), 1, 'the old process closed its listener');

      // Never closing: CMD starts a second process beside the current one (-sf with
      // the wrong pid) and exits. Without a bound the hold would last until max-hold.
      const t0 = Date.now();
      const orphan = synhold([
        '--netns',
        ns.name,
        'protect',
        '--max-hold',
        '10s',
        '--settle-wait',
        '700ms',
        '--',
        HAPROXY_BIN,
        '-f',
        h.cfg,
        '-p',
        h.pidFile('c'),
        '-D',
      ]);
      const took = Date.now() - t0;
      assert.equal(orphan.status, 0, orphan.stderr);
      const s2 = summary(orphan.stderr);
      assert.match(s2.reason, /^command exited; port 16000: new .* up, old .* still open \d+ ms later \(--settle-wait\): not closing$/);
      assert.ok(s2.ms >= 700, `released after ${s2.ms} ms, before --settle-wait`);
      assert.ok(took < 5000, `protect took ${took} ms: held toward max-hold`);
      assert.equal(h.listeners(), 2, 'both listeners are still there (ss)');

      // --release-on exit releases at CMD's exit even then: that is what it asks for.
      const atExit = synhold([
        '--netns',
        ns.name,
        'protect',
        '--max-hold',
        '10s',
        '--release-on',
        'exit',
        '--',
        HAPROXY_BIN,
        '-f',
        h.cfg,
        '-p',
        h.pidFile('d'),
        '-D',
      ]);
      assert.equal(atExit.status, 0, atExit.stderr);
      const s3 = summary(atExit.stderr);
      assert.equal(s3.reason, 'command exited');
      assert.ok(s3.ms < 1500, `held ${s3.ms} ms after an exit that should have released it`);
      assert.equal(h.listeners(), 3);
      const st = JSON.parse(synhold(['--netns', ns.name, '--json', 'status']).stdout);
      assert.equal(st.held, false, 'nothing is held after protect');
    } finally {
      synhold(['--netns', ns.name, 'teardown']);
      h.cleanup();
    }
  });
});
