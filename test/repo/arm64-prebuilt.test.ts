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
 *     install script's check, status, setup (nfqueue), protect holding a client
 *     until its command ends (the hold's watchdog the arm64 one), status,
 *     teardown; checked from outside with iptables-save, /proc and the client.
 *
 * The arm64 node runs under qemu-aarch64 in a plain network namespace; a shim
 * it preloads (QEMU_SET_ENV; the shim removes itself from the environment the
 * node's children inherit) does three things for it alone:
 *   - what binfmt_misc would: a program it starts that is an AArch64 ELF file
 *     (the watchdog) runs under qemu-aarch64, others (iptables) as they are.
 *     Not binfmt_misc itself: registering there is for the whole machine, and
 *     the private instance of a user namespace (Linux 6.7+) is out of reach
 *     under chroot (scripts/ci-bare.sh), where unshare(CLONE_NEWUSER) is EPERM.
 * and two limits of qemu 7.2's user-mode emulation (not of the product):
 *   - qemu refuses netlink sockets other than NETLINK_ROUTE, NETLINK_AUDIT and
 *     NETLINK_KOBJECT_UEVENT (EPROTONOSUPPORT: the only ones it can translate
 *     between byte orders), so the addon's NETLINK_NETFILTER sockets would fail
 *     ("synhold protect: open netlink socket: EPROTONOSUPPORT"). For that one
 *     failure the shim asks a broker, a native python3 in the same namespace,
 *     to create the socket and pass it back (SCM_RIGHTS); everything else on it
 *     (bind, config, verdicts, the watchdog's copy) is the arm64 code's.
 *   - qemu passes an int-sized optlen to getsockopt for SOL_SOCKET options it
 *     does not know, so SO_NETNS_COOKIE (a u64) fails with EINVAL. The shim
 *     turns that EINVAL into ENOPROTOOPT, which the product takes as a kernel
 *     before 5.14 (its state keyed by the namespace's inode instead).
 */
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { withNetns } from '../helpers/netns.js';
import { startClient, startEchoServer } from '../helpers/tcp.js';
import { Child, devNull, pipe } from '../../src/host/child.js';
import { NfQueue, encodeReleaseRequests } from '../../src/nfqueue/nfnetlink_queue.js';
import { readKernelQueueStats } from '../../src/nfqueue/proc.js';

// Bounds in Promise.race are unref'd: a pending one must not keep the test process alive after its test ends.
const root = fileURLToPath(new URL('../../../', import.meta.url));
const QUEUE = 7300;
const PORT = 16310;
/** The arm64 libc of the cross toolchain (libc6-arm64-cross), what qemu-aarch64 runs the watchdog on. */
const CROSS_LIBC = '/usr/aarch64-linux-gnu';

let dir: string;
let pkg: string;
let packMs = 0;

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
  const t0 = performance.now();
  const p = spawnSync('npm', ['pack', root, '--silent', '--pack-destination', dir], { cwd: dir, encoding: 'utf8', timeout: 300_000 });
  assert.equal(p.status, 0, p.stderr);
  const tarball = join(dir, p.stdout.trim().split('\n').at(-1)!);
  const x = spawnSync('tar', ['-xzf', tarball, '-C', dir], { encoding: 'utf8' });
  assert.equal(x.status, 0, x.stderr);
  packMs = performance.now() - t0;
  pkg = join(dir, 'package');
  assert.equal(existsSync(join(pkg, 'build')), false, 'the package has no source build: only the prebuilt binaries can load');
  for (const f of ['synhold_native.node', 'synhold-watchdog'])
    assert.equal(elfMachine(join(pkg, 'prebuilds/linux-arm64', f)), 0xb7, `prebuilds/linux-arm64/${f} is an AArch64 binary`);
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/**
 * A client to PORT in the namespace whose SYN the queue holds (the kernel's count in
 * /proc/net/netfilter/nfnetlink_queue, polled until the deadline), still not connected 300 ms later.
 */
async function heldClient(ns: string, queue: number, deadline: number, heldWhile: string): Promise<ReturnType<typeof startClient>> {
  const client = startClient(ns, '127.0.0.1', PORT);
  let connected = false;
  void client.connected.then(() => (connected = true));
  let queued = 0;
  while (Date.now() < deadline && queued === 0) {
    queued = (await readKernelQueueStats(ns)).find((s) => s.queue === queue)?.queueTotal ?? 0;
    if (queued === 0) await sleep(20);
  }
  assert.equal(queued, 1, "the client's SYN is held in the queue (/proc/net/netfilter/nfnetlink_queue)");
  await sleep(300);
  assert.equal(connected, false, heldWhile);
  return client;
}

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

      client = await heldClient(ns.name, QUEUE, Date.now() + 10_000, 'the client is held while the owner lives');
      assert.equal(wdEnded, false, 'the watchdog runs (under qemu) while the owner lives');

      const k0 = performance.now();
      owner.kill('SIGKILL');
      const end = await Promise.race([wd.ended, sleep(10_000, undefined, { ref: false })]);
      const endMs = performance.now() - k0;
      assert.ok(end, 'the watchdog ended within 10 s of its owner');
      assert.deepEqual([end.code, end.signal], [10, null], 'exit 10: released because its owner is gone');
      await Promise.race([
        client.connected,
        sleep(5000, undefined, { ref: false }).then(() => assert.fail('the held client did not connect after the release')),
      ]);
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
      t.diagnostic(`npm pack (prebuild: both architectures) and unpack: ${(packMs / 1000).toFixed(1)} s`);
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

/**
 * The arm64 shim for the two limits of qemu-user (see the top of this file),
 * built with the cross compiler, preloaded into the arm64 node only.
 */
function qemuShim(): string {
  const src = join(dir, 'qemu-shim.c');
  writeFileSync(
    src,
    String.raw`#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
/* qemu-user hands the kernel an int-sized optlen for this u64 option: EINVAL. Say "no such option" instead. */
int getsockopt(int fd, int level, int name, void *val, socklen_t *len) {
  static int (*real)(int, int, int, void *, socklen_t *);
  if (!real) real = (int (*)(int, int, int, void *, socklen_t *))dlsym(RTLD_NEXT, "getsockopt");
  int rc = real(fd, level, name, val, len);
  if (rc < 0 && errno == EINVAL && level == SOL_SOCKET && name == SO_NETNS_COOKIE) errno = ENOPROTOOPT;
  return rc;
}
/* The socket qemu would not create, from the broker (a native process in this network namespace, which it checks). */
static int brokered(int domain, int type, int protocol) {
  char ns[64] = {0};
  if (readlink("/proc/thread-self/ns/net", ns, sizeof ns - 1) < 0) return -1;
  int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c < 0) return -1;
  static const char name[] = "${BROKER_NAME}";
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  memcpy(a.sun_path + 1, name, sizeof name - 1);
  int req[3] = {domain, type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC), protocol};
  char msg[sizeof req + sizeof ns];
  memcpy(msg, req, sizeof req);
  memcpy(msg + sizeof req, ns, sizeof ns);
  int err = EPROTONOSUPPORT, fd = -1;
  if (connect(c, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + sizeof name) == 0 && write(c, msg, sizeof msg) == (ssize_t)sizeof msg) {
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
    int reply = EIO;
    struct iovec iov = {&reply, sizeof reply};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    if (recvmsg(c, &m, MSG_CMSG_CLOEXEC) == (ssize_t)sizeof reply) {
      struct cmsghdr *h = CMSG_FIRSTHDR(&m);
      if (reply == 0 && h && h->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(h), sizeof fd);
      err = reply ? reply : EIO;
    }
  }
  close(c);
  if (fd < 0) { errno = err; return -1; }
  if (type & SOCK_NONBLOCK) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (!(type & SOCK_CLOEXEC)) fcntl(fd, F_SETFD, 0);
  return fd;
}
int socket(int domain, int type, int protocol) {
  static int (*real)(int, int, int);
  if (!real) real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
  int fd = real(domain, type, protocol);
  if (fd >= 0 || errno != EPROTONOSUPPORT || domain != AF_NETLINK) return fd;
  return brokered(domain, type, protocol);
}
/* binfmt_misc's job, for the programs the node starts: an AArch64 ELF file runs under qemu
 * (argv[0] kept: -0), anything else (iptables, sh) as it is. */
static char *qemu;
static int aarch64(const char *path) {
  unsigned char h[20];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, h, sizeof h);
  close(fd);
  return n == (ssize_t)sizeof h && memcmp(h, "\x7f" "ELF\x02\x01", 6) == 0 && h[18] == 0xb7 && h[19] == 0;
}
int execve(const char *path, char *const argv[], char *const envp[]) {
  static int (*real)(const char *, char *const[], char *const[]);
  if (!real) real = (int (*)(const char *, char *const[], char *const[]))dlsym(RTLD_NEXT, "execve");
  if (!qemu || !aarch64(path)) return real(path, argv, envp);
  int n = 0;
  while (argv[n]) n++;
  char *a[n + 5];
  a[0] = qemu, a[1] = "-0", a[2] = argv[0] ? argv[0] : (char *)path, a[3] = (char *)path;
  for (int i = 1; i <= n; i++) a[3 + i] = argv[i];
  if (n == 0) a[4] = NULL;
  return real(qemu, a, envp);
}
extern char **environ;
int execvp(const char *file, char *const argv[]) {
  static int (*real)(const char *, char *const[]);
  if (!real) real = (int (*)(const char *, char *const[]))dlsym(RTLD_NEXT, "execvp");
  if (strchr(file, '/')) return execve(file, argv, environ);
  return real(file, argv);
}
/* Only the arm64 node: not the programs it runs (iptables, the watchdog, and the watchdog's qemu). */
__attribute__((constructor)) static void forget(void) {
  const char *q = getenv("SYNHOLD_TEST_QEMU");
  if (q) qemu = strdup(q);
  unsetenv("SYNHOLD_TEST_QEMU");
  unsetenv("LD_PRELOAD");
  unsetenv("QEMU_SET_ENV");
}
`,
  );
  const so = join(dir, 'qemu-shim.so');
  const r = spawnSync('aarch64-linux-gnu-gcc', ['-Wall', '-Wextra', '-Werror', '-O2', '-shared', '-fPIC', src, '-o', so], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return so;
}

const BROKER_NAME = 'synhold-qemu-netlink';
/**
 * The netlink socket broker: creates the socket a request names (netlink only,
 * and only for a caller in its own network namespace) and passes it back
 * (SCM_RIGHTS). Prints "ready" once it listens.
 */
const BROKER = `
import os, socket, struct
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind('\\0${BROKER_NAME}')
srv.listen(16)
mine = os.readlink('/proc/self/ns/net')
print('ready', flush=True)
while True:
    c, _ = srv.accept()
    with c:
        msg = c.recv(12 + 64, socket.MSG_WAITALL)
        domain, type_, protocol = struct.unpack('iii', msg[:12])
        if domain != socket.AF_NETLINK or msg[12:].split(b'\\0', 1)[0].decode() != mine:
            c.sendall(struct.pack('i', 18))  # EXDEV
            continue
        try:
            s = socket.socket(domain, type_, protocol)
        except OSError as e:
            c.sendall(struct.pack('i', e.errno))
            continue
        with s:
            socket.send_fds(c, [struct.pack('i', 0)], [s.fileno()])
`;

/** Non-comment lines of iptables-save (its header and footer carry the time). */
const rulesOf = (save: string) => save.replace(/^# .*\n/gm, '');

test('the arm64 addon in arm64 Node.js 18 under qemu: the packed CLI sets up (nfqueue), protect holds a client until its command ends (the arm64 watchdog beside it), status, teardown', async (t) => {
  const qemuBin = qemu();
  const s0 = performance.now();
  const sysroot = spawnSync('bash', [join(root, 'scripts/arm64-node.sh')], { encoding: 'utf8', timeout: 600_000 });
  assert.equal(sysroot.status, 0, sysroot.stderr);
  const nodeRoot = sysroot.stdout.trim();
  const sysrootMs = performance.now() - s0;
  const shim = qemuShim();

  await withNetns(async (ns) => {
    let broker: ChildProcess | undefined;
    let server: Awaited<ReturnType<typeof startEchoServer>> | undefined;
    let client: ReturnType<typeof startClient> | undefined;
    let protect: ChildProcess | undefined;
    try {
      broker = spawn('ip', ['netns', 'exec', ns.name, 'python3', '-c', BROKER], { stdio: ['ignore', 'pipe', 'inherit'] });
      const [line] = (await Promise.race([once(createInterface({ input: broker.stdout! }), 'line'), once(broker, 'exit').then(() => ['exited'])])) as string[];
      assert.equal(line, 'ready', 'the netlink socket broker listens');
      const runDir = join(dir, 'run');
      // The arm64 node in the namespace, its libraries from the private root, the shim for it alone.
      const arm64Argv = (args: string[]) => ['netns', 'exec', ns.name, qemuBin, join(nodeRoot, 'usr/bin/node'), ...args];
      const arm64Env = {
        PATH: process.env.PATH,
        QEMU_LD_PREFIX: nodeRoot,
        QEMU_SET_ENV: `LD_PRELOAD=${shim},SYNHOLD_TEST_QEMU=${qemuBin}`,
        SYNHOLD_RUN_DIR: runDir,
      };
      const times: string[] = [];
      const arm64 = (args: string[]) => {
        const a0 = performance.now();
        const r = spawnSync('ip', arm64Argv(args), { encoding: 'utf8', timeout: 120_000, env: arm64Env });
        times.push(`${args[0] === cli ? args[1] : basename(args[0]!)} ${(performance.now() - a0).toFixed(0)} ms`);
        return r;
      };
      const cli = join(pkg, 'dist/synhold.cjs');

      const v = arm64(['-p', 'process.arch + " " + process.version']);
      assert.equal(v.status, 0, v.stderr);
      assert.match(v.stdout, /^arm64 v18\./, 'Debian bookworm arm64 Node.js 18 runs');
      // The install script's own check: process.dlopen of the arm64 addon, and the arm64 watchdog run (usage, exit 2).
      const install = arm64([join(pkg, 'scripts/install-native.cjs')]);
      assert.equal(install.status, 0, install.stderr);
      assert.match(install.stderr, /synhold: using the prebuilt native addon and watchdog for linux-arm64/);

      const st = arm64([cli, 'status']);
      assert.equal(st.status, 3, `status before setup: ${st.stderr}`);
      assert.match(st.stdout + st.stderr, /not set up/);
      const before = rulesOf(ns.exec('iptables-save', []));
      assert.doesNotMatch(before, /synhold/, 'nothing set up yet (iptables-save)');

      // The always-on rule, so that iptables-save (the oracle below) shows what setup installed.
      const setup = arm64([cli, 'setup', '--port', String(PORT), '--backend', 'nfqueue', '--steering', 'always']);
      assert.equal(setup.status, 0, setup.stderr);
      const rules = ns.exec('iptables-save', ['-t', 'raw']);
      const steer = new RegExp(`-A PREROUTING -p tcp -m tcp --dport ${PORT} .*-j NFQUEUE --queue-num (\\d+) --queue-bypass`).exec(rules);
      assert.ok(steer, `the steering rule (iptables-save):\n${rules}`);
      const queue = Number(steer[1]);
      assert.equal(ns.exec('cat', ['/proc/sys/net/ipv4/tcp_migrate_req']).trim(), '1', 'setup set net.ipv4.tcp_migrate_req (/proc)');

      // protect: its command waits on a fifo the test opens once a client's SYN is seen held.
      server = await startEchoServer(ns.name, '127.0.0.1', PORT);
      const gate = join(dir, 'gate');
      execFileSync('mkfifo', [gate]);
      const p0 = performance.now();
      protect = spawn('ip', arm64Argv([cli, 'protect', '--', 'cat', gate]), { env: arm64Env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      protect.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      protect.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const protectEnded = once(protect, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
      const until = Date.now() + 60_000;
      while (Date.now() < until && !(await readKernelQueueStats(ns.name)).some((s) => s.queue === queue) && protect.exitCode === null) await sleep(50);
      assert.ok(
        (await readKernelQueueStats(ns.name)).some((s) => s.queue === queue),
        `protect bound queue ${queue} (/proc/net/netfilter/nfnetlink_queue): ${out}`,
      );
      const heldAt = performance.now();
      const watchdogBin = join(pkg, 'prebuilds/linux-arm64/synhold-watchdog');
      const watchdogs = execFileSync('pgrep', ['-f', '-a', watchdogBin], { encoding: 'utf8' });
      assert.match(
        watchdogs,
        /qemu-aarch64 -0 \S+ \S+\/prebuilds\/linux-arm64\/synhold-watchdog --deadline-ms/,
        'the hold runs the arm64 watchdog, under qemu',
      );
      const wdPid = watchdogs.split('\n')[0]!.split(' ')[0]!;
      const wdEnv = readFileSync(`/proc/${wdPid}/environ`, 'utf8').split('\0');
      assert.deepEqual(
        wdEnv.filter((e) => /^(LD_PRELOAD|QEMU_SET_ENV|SYNHOLD_TEST_QEMU)=/.test(e)),
        [],
        'the shim stays in the arm64 node: the watchdog (and its qemu) run without it',
      );
      client = await heldClient(ns.name, queue, until, 'the client waits while the command runs');
      writeFileSync(gate, ''); // the command (cat) reads EOF and exits: protect releases
      const [code] = await Promise.race([protectEnded, sleep(60_000, undefined, { ref: false }).then(() => assert.fail(`protect did not end: ${out}`))]);
      const protectMs = performance.now() - p0;
      assert.equal(code, 0, out);
      assert.match(out, /held [\d.]+ ms \(1 SYNs? released/, out);
      await Promise.race([
        client.connected,
        sleep(5000, undefined, { ref: false }).then(() => assert.fail('the held client did not connect after the release')),
      ]);
      assert.deepEqual(await readKernelQueueStats(ns.name), [], 'released: no queue bound (/proc/net/netfilter/nfnetlink_queue)');

      const st2 = arm64([cli, 'status']);
      assert.equal(st2.status, 0, st2.stderr);
      assert.match(st2.stdout, /set up, backend nfqueue/);
      assert.match(st2.stdout, /totals: 1 holds, 1 released/);

      const down = arm64([cli, 'teardown']);
      assert.equal(down.status, 0, down.stderr);
      assert.equal(rulesOf(ns.exec('iptables-save', [])), before, 'teardown restored iptables-save as it was before setup');
      assert.equal(ns.exec('cat', ['/proc/sys/net/ipv4/tcp_migrate_req']).trim(), '0', 'teardown restored net.ipv4.tcp_migrate_req (/proc)');
      assert.equal(spawnSync('pgrep', ['-f', watchdogBin]).status, 1, 'no arm64 watchdog left (pgrep)');
      t.diagnostic(
        `arm64 Node.js root: ${(sysrootMs / 1000).toFixed(1)} s (scripts/arm64-node.sh, cached after the first run); under qemu: ${times.join('; ')}; protect -- cat gate ${protectMs.toFixed(0)} ms (${(heldAt - p0).toFixed(0)} ms until the queue was bound)`,
      );
    } finally {
      client?.kill();
      server?.kill();
      protect?.kill('SIGKILL');
      broker?.kill('SIGKILL');
    }
  });
});
