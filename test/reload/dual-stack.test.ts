/**
 * A dual-stack server (127.0.0.1 and ::1 on one port) whose new process binds
 * the two families at different moments: protect must not release when the
 * IPv4 listener has swapped while the IPv6 one has not. The rule is unit-tested
 * in test/unit/release-policy.test.ts; this is the real kernel: a Python server
 * in a fresh namespace that, on SIGUSR2, swaps its IPv4 listener after 0.1 s and
 * its IPv6 listener after 0.7 s, and an IPv6 client that connects between the
 * two. The oracle is the clock both processes share (CLOCK_MONOTONIC: Python's
 * time.monotonic()): the client's connect must come after the IPv6 swap, and
 * land on the new listener (the server says which socket accepted it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { PY_REUSEPORT_LISTEN } from '../helpers/tcp.js';
import { withNetns } from '../helpers/netns.js';
import { synhold, synholdAsync } from '../helpers/cli.js';

const PORT = 16110;
const V4_AFTER_S = 0.1;
const V6_AFTER_S = 0.7;
const ROUNDS = 3;

// Serves PORT on both families; on SIGUSR2 swaps IPv4 after V4_AFTER_S and IPv6 after V6_AFTER_S,
// printing "swap4 T" / "swap6 T" (time.monotonic() just before the old one's close()), and "accept FAMILY GEN T" for each connection
// (GEN: 0 the first listeners, +1 at each swap). Exits after 60 s.
const SERVER = `
import select, signal, socket, sys, time
port, a4, a6 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
${PY_REUSEPORT_LISTEN}
socks = {4: (listen(socket.AF_INET, "127.0.0.1"), 0), 6: (listen(socket.AF_INET6, "::1"), 0)}
due = {}
def on_usr2(sig, frame):
    now = time.monotonic()
    due[4], due[6] = now + a4, now + a6
signal.signal(signal.SIGUSR2, on_usr2)
print("ready", flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    for fam in (4, 6):
        if fam in due and time.monotonic() >= due[fam]:
            old, gen = socks[fam]
            socks[fam] = (listen(socket.AF_INET if fam == 4 else socket.AF_INET6, "127.0.0.1" if fam == 4 else "::1"), gen + 1)
            t = time.monotonic()
            old.close()
            del due[fam]
            print("swap%d %.6f" % (fam, t), flush=True)
    r, _, _ = select.select([s for s, _ in socks.values()], [], [], 0.002)
    for s in r:
        fam, gen = next((f, g) for f, (x, g) in socks.items() if x is s)
        c, _ = s.accept()
        print("accept %d %d %.6f" % (fam, gen, time.monotonic()), flush=True)
        c.close()
`;

// Connects to [::1]:PORT DELAY s after it starts; prints "connected T" or "error ERRNO T". Bounded: 5 s.
const CLIENT = `
import socket, sys, time
port, delay = int(sys.argv[1]), float(sys.argv[2])
time.sleep(delay)
s = socket.socket(socket.AF_INET6)
s.settimeout(5)
try:
    s.connect(("::1", port))
    print("connected %.6f" % time.monotonic(), flush=True)
    s.recv(1)
except OSError as e:
    print("error %s %.6f" % (e.errno, time.monotonic()), flush=True)
`;

/** Lines of a child's stdout as they come. */
function lines(c: ChildProcess): string[] {
  const out: string[] = [];
  createInterface({ input: c.stdout! }).on('line', (l) => out.push(l));
  return out;
}

const timeOf = (out: string[], prefix: string): number => {
  const l = out.find((x) => x.startsWith(prefix));
  assert.ok(l, `"${prefix}" in ${JSON.stringify(out)}`);
  return Number(l.split(' ').at(-1));
};

test(`dual stack (127.0.0.1 and ::1): protect --release-on swap holds until both families have swapped (${ROUNDS} rounds, real kernel)`, async (t) => {
  await withNetns(async (ns) => {
    assert.equal(synhold(['--netns', ns.name, 'setup', '--port', String(PORT), '--backend', 'nfqueue']).status, 0);
    const server = spawn('ip', ['netns', 'exec', ns.name, 'python3', '-c', SERVER, String(PORT), String(V4_AFTER_S), String(V6_AFTER_S)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const out = lines(server);
    try {
      await new Promise<void>((resolve, reject) => {
        server.stdout!.once('data', () => resolve());
        server.once('exit', (code) => reject(new Error(`server exited ${code}`)));
      });
      for (let round = 0; round < ROUNDS; round++) {
        out.length = 0;
        // The client connects 0.35 s into the reload: after the IPv4 swap, before the IPv6 one.
        const client = spawn('ip', ['netns', 'exec', ns.name, 'python3', '-c', CLIENT, String(PORT), '0.35'], { stdio: ['ignore', 'pipe', 'inherit'] });
        const clientOut = lines(client);
        const clientDone = new Promise((resolve) => client.once('exit', resolve));
        const r = await synholdAsync([
          '--netns',
          ns.name,
          '--json',
          'protect',
          '--release-on',
          'swap',
          '--max-hold',
          '5s',
          '--',
          'kill',
          '-USR2',
          String(server.pid),
        ]).done;
        await clientDone;
        assert.equal(r.status, 0, r.stderr);
        const res = JSON.parse(r.stdout) as { holdMs: number; releaseCause: string };
        const swap4 = timeOf(out, 'swap4');
        const swap6 = timeOf(out, 'swap6');
        const connected = timeOf(clientOut, 'connected');
        t.diagnostic(
          `round ${round + 1}: IPv4 swapped, IPv6 swapped ${((swap6 - swap4) * 1000).toFixed(0)} ms later; the IPv6 client connected ${((connected - swap6) * 1000).toFixed(1)} ms after the IPv6 swap; hold ${res.holdMs.toFixed(0)} ms (${res.releaseCause})`,
        );
        assert.ok(swap6 - swap4 > 0.4, 'the families swapped apart');
        assert.ok(connected >= swap6, `the IPv6 client was held until the IPv6 swap (connected ${((connected - swap6) * 1000).toFixed(1)} ms after it)`);
        assert.ok(res.holdMs >= (V6_AFTER_S - 0.05) * 1000, `held ${res.holdMs} ms: past the IPv6 swap`);
        // The kernel queued the held SYN on this round's new IPv6 listener, not on the closed one.
        await new Promise((resolve) => setTimeout(resolve, 50));
        assert.ok(
          out.some((l) => l.startsWith(`accept 6 ${round + 1} `)),
          `the new IPv6 listener accepted the client: ${JSON.stringify(out)}`,
        );
      }
    } finally {
      server.kill();
      synhold(['--netns', ns.name, 'teardown']);
    }
  });
});
