/**
 * A reload command that returns before the reload is done (`kill -USR2`,
 * `systemctl reload`, a master CLI's `reload`): the server rebinds later, on
 * its own. With the default release rule protect sees the very sockets from
 * before at CMD's exit and releases at once, so the hold covers nothing; with
 * `--release-on swap` it holds until the new listener is up and the old one is
 * gone. The server is a small Python process that, on SIGUSR2, binds a new
 * listener (SO_REUSEPORT) after a config-parse-like delay and closes the old
 * one. `ss` is the oracle for the swap.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { synhold } from '../helpers/cli.js';

const PORT = 16100;
const REBIND_DELAY_S = 0.3;

// Serves PORT; on SIGUSR2, after REBIND_DELAY_S, binds a new listener and closes the old. Exits after 60 s.
const SERVER = `
import select, signal, socket, sys, time
port, delay = int(sys.argv[1]), float(sys.argv[2])
def listen():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    return s
current, reload_at = listen(), None
def on_usr2(sig, frame):
    global reload_at
    reload_at = time.monotonic() + delay
signal.signal(signal.SIGUSR2, on_usr2)
print("ready", flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    if reload_at is not None and time.monotonic() >= reload_at:
        new = listen()
        current.close()
        current, reload_at = new, None
    r, _, _ = select.select([current], [], [], 0.005)
    if r:
        c, _ = current.accept()
        c.close()
`;

interface Timeline {
  newListenerMs?: number;
  oldGoneMs?: number;
  releaseSentMs: number;
}

function listenerInodes(ns: TestNetns): string[] {
  return ns
    .exec('ss', ['-Hltne', `sport = :${PORT}`])
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => /ino:(\d+)/.exec(l)?.[1] ?? '?');
}

test('a reload command that returns early: the default rule releases at its exit (before the swap); --release-on swap holds until the swap', async () => {
  await withNetns(async (ns) => {
    assert.equal(synhold(['--netns', ns.name, 'setup', '--port', String(PORT)]).status, 0);
    const server = spawn('ip', ['netns', 'exec', ns.name, 'python3', '-c', SERVER, String(PORT), String(REBIND_DELAY_S)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.stdout.once('data', () => resolve());
        server.once('exit', (code) => reject(new Error(`server exited ${code}`)));
      });
      // ip netns exec execs python3 in place: this is the server's pid.
      const pid = String(server.pid);
      const protect = (extra: string[]) => {
        const r = synhold(['--netns', ns.name, '--json', 'protect', '--max-hold', '5s', ...extra, '--', 'kill', '-USR2', pid]);
        assert.equal(r.status, 0, r.stderr);
        return JSON.parse(r.stdout) as { holdMs: number; releaseCause: string; timeline: Timeline };
      };

      // Today's rule: CMD exited 0 with the same sockets as before: released at once, before the rebind.
      const before = listenerInodes(ns);
      const early = protect([]);
      assert.equal(early.releaseCause, 'command-exited');
      assert.ok(early.holdMs < REBIND_DELAY_S * 1000, `held ${early.holdMs} ms`);
      assert.equal(early.timeline.oldGoneMs, undefined, 'released before the old listener went');
      await sleep(REBIND_DELAY_S * 1000 + 300);
      assert.notDeepEqual(listenerInodes(ns), before, 'the server did rebind (after protect had let go)');

      // --release-on swap: held across the rebind, released right after it.
      const before2 = listenerInodes(ns);
      const swap = protect(['--release-on', 'swap']);
      assert.equal(swap.releaseCause, 'reload-done');
      const tl = swap.timeline;
      assert.ok(tl.newListenerMs !== undefined && tl.oldGoneMs !== undefined, JSON.stringify(tl));
      assert.ok(tl.newListenerMs >= REBIND_DELAY_S * 1000 - 50, `new listener seen at ${tl.newListenerMs} ms`);
      assert.ok(tl.releaseSentMs >= tl.oldGoneMs && tl.releaseSentMs - tl.oldGoneMs < 100, `release ${tl.releaseSentMs - tl.oldGoneMs} ms after the swap`);
      assert.ok(swap.holdMs < 2000, `held ${swap.holdMs} ms: toward max-hold`);
      const after = listenerInodes(ns);
      assert.equal(after.length, 1);
      assert.ok(!before2.includes(after[0]!), 'ss: one listener, a new one');
    } finally {
      server.kill('SIGKILL');
    }
  });
});
