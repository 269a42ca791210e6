/**
 * The linux-arm64 prebuilt binaries the npm package ships (scripts/prebuild.sh,
 * cross-compiled), executed for real under qemu-aarch64 user-mode emulation
 * (Debian's qemu-user) against this machine's kernel, in fresh namespaces:
 *
 *   - the arm64 watchdog, run on the cross toolchain's arm64 libc
 *     (/usr/aarch64-linux-gnu), keeps and ends an nfqueue hold made by this
 *     process: its owner is SIGKILLed, and a client whose SYN was held connects;
 *     the kernel's /proc and iptables-save say the queue, not the rule, went;
 *   - the arm64 addon, loaded by Debian bookworm's arm64 Node.js 18 (unpacked
 *     by scripts/arm64-node.sh into .cache/, not installed) running the packed
 *     CLI (dist/synhold.cjs picks prebuilds/linux-arm64 by process.arch): the
 *     install script's check, status, setup (nfqueue), status, checked with
 *     iptables-save and /proc from outside.
 *
 * Two limits of qemu 7.2's user-mode emulation (not of the product) shape the
 * second test:
 *   - it refuses netlink sockets other than NETLINK_ROUTE, NETLINK_AUDIT and
 *     NETLINK_KOBJECT_UEVENT (EPROTONOSUPPORT: it only knows how to translate
 *     those), so protect and teardown, which open NETLINK_NETFILTER, cannot run
 *     under it; the test holds protect to failing with exactly that, leaving
 *     the namespace's rules as setup made them;
 *   - it passes an int-sized optlen to getsockopt for SOL_SOCKET options it
 *     does not know, so SO_NETNS_COOKIE (a u64) fails with EINVAL. A one-call
 *     arm64 shim (LD_PRELOAD, given to the guest only) turns that EINVAL into
 *     ENOPROTOOPT, which the product takes as a kernel before 5.14 (its state
 *     keyed by the namespace's inode instead).
 * The arm64 watchdog that protect would start is exec'd by the arm64 Node.js
 * through binfmt_misc: an instance private to the test's user namespace
 * (Linux 6.7+ sandboxed binfmt_misc), so the machine's own binfmt_misc is never
 * touched.
 */
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { withNetns } from '../helpers/netns.js';
import { startClient, startEchoServer } from '../helpers/tcp.js';
import { Child, devNull, pipe } from '../../src/host/child.js';
import { NfQueue, encodeReleaseRequests } from '../../src/nfqueue/nfnetlink_queue.js';
import { readKernelQueueStats } from '../../src/nfqueue/proc.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const QUEUE = 7300;
const PORT = 16310;
/** The arm64 libc of the cross toolchain (libc6-arm64-cross), what qemu-aarch64 runs the watchdog on. */
const CROSS_LIBC = '/usr/aarch64-linux-gnu';

let dir: string;
let pkg: string;

function qemu(): string {
  const r = spawnSync('sh', ['-c', 'command -v qemu-aarch64'], { encoding: 'utf8' });
  assert.equal(r.status, 0, 'qemu-aarch64 is missing: install the Debian package qemu-user (scripts/install-deps.sh does)');
  return r.stdout.trim();
}

function elfMachine(path: string): number {
  const h = readFileSync(path).subarray(0, 20);
  assert.equal(h.readUInt32BE(0), 0x7f454c46, `${path} is an ELF file`);
  return h.readUInt16LE(18);
}

before(() => {
  // The package as npm packs it (prepack: scripts/prebuild.sh), unpacked: the binaries a user gets.
  dir = mkdtempSync(join(tmpdir(), 'synhold-arm64-'));
  const p = spawnSync('npm', ['pack', root, '--silent', '--pack-destination', dir], { cwd: dir, encoding: 'utf8', timeout: 300_000 });
  assert.equal(p.status, 0, p.stderr);
  const tarball = join(dir, p.stdout.trim().split('\n').at(-1)!);
  const x = spawnSync('tar', ['-xzf', tarball, '-C', dir], { encoding: 'utf8' });
  assert.equal(x.status, 0, x.stderr);
  pkg = join(dir, 'package');
  assert.equal(existsSync(join(pkg, 'build')), false, 'the package has no source build: only the prebuilt binaries can load');
  for (const f of ['synhold_native.node', 'synhold-watchdog'])
    assert.equal(elfMachine(join(pkg, 'prebuilds/linux-arm64', f)), 0xb7, `prebuilds/linux-arm64/${f} is an AArch64 binary`);
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the arm64 watchdog under qemu-aarch64 keeps an nfqueue hold while its owner lives and releases it when the owner is SIGKILLed: the held client connects', async (t) => {
  const qemuBin = qemu();
  const watchdog = join(pkg, 'prebuilds/linux-arm64/synhold-watchdog');
  await withNetns(async (ns) => {
    const server = await startEchoServer(ns.name, '127.0.0.1', PORT);
    const q = NfQueue.open({ queue: QUEUE, netns: ns.name, maxLen: 64, copyRange: 0 });
    const lockFd = openSync(join(dir, 'lock'), 'w');
    const record = join(dir, 'hold.json');
    writeFileSync(record, '{}');
    let owner: ChildProcess | undefined;
    let wd: Child | undefined;
    let client: ReturnType<typeof startClient> | undefined;
    try {
      await q.bindQueue(true);
      ns.exec('iptables', ['-t', 'raw', '-A', 'PREROUTING', '-p', 'tcp', '--dport', String(PORT), '--syn', '-j', 'NFQUEUE', '--queue-num', String(QUEUE)]);
      // The owner: a process that holds the write end of the owner pipe, as protect does.
      const [ownerRead, ownerWrite] = pipe();
      owner = spawn('sleep', ['600'], { stdio: ['ignore', ownerWrite, 'ignore'] });
      closeSync(ownerWrite);
      const messages = encodeReleaseRequests(QUEUE, () => q.reserveSeq());
      const args = ['--deadline-ms', '60000', '--owner-fd', '0', '--lock-fd', '3', '--record', record, '--journal', join(dir, 'journal')];
      for (const m of messages) args.push('--send', `4:${m.toString('hex')}`);
      // fds as src/protect/hold/watchdog.ts hands them: 0 owner pipe, 2 stderr, 3 lock, 4 the queue's socket.
      const t0 = performance.now();
      wd = Child.start([qemuBin, '-L', CROSS_LIBC, watchdog, ...args], { fds: [ownerRead, devNull(), 2, lockFd, q.fd], newSession: true });
      closeSync(ownerRead);
      let wdEnded = false;
      void wd.ended.then(() => (wdEnded = true));
      // Only the watchdog keeps the queue's socket now (this process would otherwise be a second reader of its acks).
      q.close();

      client = startClient(ns.name, '127.0.0.1', PORT);
      let connected = false;
      void client.connected.then(() => (connected = true));
      const until = Date.now() + 10_000;
      let queued = 0;
      while (Date.now() < until && queued === 0) {
        queued = (await readKernelQueueStats(ns.name)).find((s) => s.queue === QUEUE)?.queueTotal ?? 0;
        if (queued === 0) await sleep(20);
      }
      assert.equal(queued, 1, "the client's SYN is held in the queue (/proc/net/netfilter/nfnetlink_queue)");
      await sleep(300);
      assert.equal(connected, false, 'the client is held while the owner lives');
      assert.equal(wdEnded, false, 'the watchdog runs (under qemu) while the owner lives');

      const k0 = performance.now();
      owner.kill('SIGKILL');
      const end = await Promise.race([wd.ended, sleep(10_000, undefined)]);
      const endMs = performance.now() - k0;
      assert.ok(end, 'the watchdog ended within 10 s of its owner');
      assert.deepEqual([end.code, end.signal], [10, null], 'exit 10: released because its owner is gone');
      await Promise.race([client.connected, sleep(5000).then(() => assert.fail('the held client did not connect after the release'))]);
      const connectMs = performance.now() - k0;
      assert.deepEqual(
        (await readKernelQueueStats(ns.name)).filter((s) => s.queue === QUEUE),
        [],
        'the queue is unbound (/proc/net/netfilter/nfnetlink_queue)',
      );
      assert.match(
        ns.exec('iptables-save', ['-t', 'raw']),
        new RegExp(`--dport ${PORT} .*-j NFQUEUE --queue-num ${QUEUE}`),
        'the rule stays: the queue, not the rule, let the SYN through',
      );
      assert.equal(existsSync(record), false, 'the watchdog removed the hold record after its release');
      assert.match(readFileSync(join(dir, 'journal'), 'utf8'), /\S/, 'the watchdog journaled its release');
      t.diagnostic(
        `qemu watchdog: started to owner killed ${(k0 - t0).toFixed(0)} ms; owner killed to watchdog exit ${endMs.toFixed(0)} ms, to client connected ${connectMs.toFixed(0)} ms`,
      );
    } finally {
      client?.kill();
      owner?.kill('SIGKILL');
      wd?.kill('SIGKILL');
      q.close();
      closeSync(lockFd);
      server.kill();
    }
  });
});

/** The arm64 shim for qemu's SO_NETNS_COOKIE (see the top of this file), built with the cross compiler. */
function cookieShim(): string {
  const src = join(dir, 'netns-cookie-shim.c');
  writeFileSync(
    src,
    `#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
/* qemu-user 7.2 hands the kernel an int-sized optlen for this u64 option: EINVAL. Say "no such option" instead. */
int getsockopt(int fd, int level, int name, void *val, socklen_t *len) {
  static int (*real)(int, int, int, void *, socklen_t *);
  if (!real) real = (int (*)(int, int, int, void *, socklen_t *))dlsym(RTLD_NEXT, "getsockopt");
  int rc = real(fd, level, name, val, len);
  if (rc < 0 && errno == EINVAL && level == SOL_SOCKET && name == SO_NETNS_COOKIE) errno = ENOPROTOOPT;
  return rc;
}
/* Only the arm64 node: not the x86-64 programs it runs (iptables), nor the watchdog. */
__attribute__((constructor)) static void forget(void) { unsetenv("LD_PRELOAD"); }
`,
  );
  const so = join(dir, 'netns-cookie-shim.so');
  const r = spawnSync('aarch64-linux-gnu-gcc', ['-Wall', '-Wextra', '-O2', '-shared', '-fPIC', src, '-o', so], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return so;
}

// A user, mount and network namespace: binfmt_misc mounted there is a fresh instance (Linux 6.7+),
// where AArch64 ELF files run under qemu-aarch64 (F: the interpreter is opened now, in this mount namespace).
const HOLDER = String.raw`set -e
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
printf '%s' ':synhold-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:'"$1"':F' >/proc/sys/fs/binfmt_misc/register
ip link set lo up
echo "ready $$"
exec cat >/dev/null
`;

test('the arm64 addon in arm64 Node.js 18 under qemu: the packed CLI checks, sets up (nfqueue) and reports on this kernel; protect fails only on qemu refusing NETLINK_NETFILTER', async (t) => {
  const qemuBin = qemu();
  const s0 = performance.now();
  const sysroot = spawnSync('bash', [join(root, 'scripts/arm64-node.sh')], { encoding: 'utf8', timeout: 600_000 });
  assert.equal(sysroot.status, 0, sysroot.stderr);
  const nodeRoot = sysroot.stdout.trim();
  const sysrootMs = performance.now() - s0;
  const shim = cookieShim();

  const holder = spawn('unshare', ['--user', '--map-root-user', '--mount', '--net', '--fork', '--kill-child', 'sh', '-c', HOLDER, 'holder', qemuBin], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  try {
    const [line] = (await Promise.race([once(createInterface({ input: holder.stdout! }), 'line'), once(holder, 'exit').then(() => ['exited'])])) as string[];
    const pid = /^ready (\d+)$/.exec(line ?? '')?.[1];
    assert.ok(pid, `the namespace holder started (${line})`);
    const runDir = join(dir, 'run');
    // From outside, as root of this machine: the oracles.
    const outside = (cmd: string, args: string[]) => {
      const r = spawnSync('nsenter', ['--target', pid, '--net', cmd, ...args], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
      return r.stdout;
    };
    // Inside: the arm64 node, its libraries from the private root, the shim for it alone.
    const times: string[] = [];
    const arm64 = (args: string[]) => {
      const a0 = performance.now();
      const r = spawnSync('nsenter', ['--target', pid, '--user', '--mount', '--net', join(nodeRoot, 'usr/bin/node'), ...args], {
        cwd: pkg,
        encoding: 'utf8',
        timeout: 120_000,
        env: { PATH: process.env.PATH, QEMU_LD_PREFIX: nodeRoot, QEMU_SET_ENV: `LD_PRELOAD=${shim}`, SYNHOLD_RUN_DIR: runDir },
      });
      times.push(
        `${args
          .map((a) => a.replace(/.*\//, ''))
          .slice(0, 2)
          .join(' ')} ${(performance.now() - a0).toFixed(0)} ms`,
      );
      return r;
    };

    // Absolute paths: nsenter --mount starts it in /.
    const cli = join(pkg, 'dist/synhold.cjs');
    const v = arm64(['-p', 'process.arch + " " + process.version']);
    assert.equal(v.status, 0, v.stderr);
    assert.match(v.stdout, /^arm64 v18\./, 'Debian bookworm arm64 Node.js 18 runs');
    // The install script's own check: process.dlopen of the arm64 addon, and the arm64 watchdog exec'd (usage, exit 2).
    const install = arm64([join(pkg, 'scripts/install-native.cjs')]);
    assert.equal(install.status, 0, install.stderr);
    assert.match(install.stderr, /synhold: using the prebuilt native addon and watchdog for linux-arm64/);

    const st = arm64([cli, 'status']);
    assert.equal(st.status, 3, `status before setup: ${st.stderr}`);
    assert.match(st.stdout + st.stderr, /not set up/);
    assert.doesNotMatch(outside('iptables-save', []), /synhold/, 'nothing set up yet (iptables-save)');

    const setup = arm64([cli, 'setup', '--port', String(PORT), '--backend', 'nfqueue']);
    assert.equal(setup.status, 0, setup.stderr);
    const rules = outside('iptables-save', ['-t', 'raw']);
    assert.match(
      rules,
      new RegExp(`-A PREROUTING -p tcp -m tcp --dport ${PORT} .*-j NFQUEUE --queue-num \\d+ --queue-bypass`),
      `the steering rule (iptables-save):\n${rules}`,
    );
    assert.equal(outside('cat', ['/proc/sys/net/ipv4/tcp_migrate_req']).trim(), '1', 'setup set net.ipv4.tcp_migrate_req (/proc)');
    const st2 = arm64([cli, 'status']);
    assert.equal(st2.status, 0, st2.stderr);
    assert.match(st2.stdout, /set up, backend nfqueue/);
    assert.match(st2.stdout, new RegExp(`port ${PORT}`));

    const protect = arm64([cli, 'protect', '--', 'true']);
    assert.equal(protect.status, 125, `protect under qemu: ${protect.stderr}`);
    assert.match(protect.stderr, /^synhold protect: open netlink socket: EPROTONOSUPPORT/, 'qemu-user refuses NETLINK_NETFILTER; nothing else failed');
    assert.deepEqual(
      outside('iptables-save', ['-t', 'raw']).replace(/^# .*\n/gm, ''),
      rules.replace(/^# .*\n/gm, ''),
      'the failed protect left the rules as setup made them',
    );
    assert.equal(outside('cat', ['/proc/net/netfilter/nfnetlink_queue']), '', 'no queue bound (/proc/net/netfilter/nfnetlink_queue)');
    t.diagnostic(`arm64 Node.js root: ${(sysrootMs / 1000).toFixed(1)} s (scripts/arm64-node.sh, cached after the first run); under qemu: ${times.join('; ')}`);
  } finally {
    // unshare --kill-child: its child (the namespace's only process) dies with it, and the namespaces with them.
    holder.kill('SIGKILL');
    if (holder.exitCode === null && holder.signalCode === null) await once(holder, 'exit');
  }
});
