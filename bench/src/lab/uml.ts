/**
 * The kernel lab: run one command inside a User-Mode Linux (UML) kernel and get back its exit
 * status and output, bounded in time.
 *
 * Why: this machine's own kernel has no sch_plug (and no module loading), so the plug path of
 * synhold can only run inside another kernel. UML is a Linux kernel that runs as an ordinary
 * process; with `rootfstype=hostfs` its root filesystem is the host's `/`, so node, tc, iptables,
 * haproxy and this checkout are all visible inside without building an image. See
 * docs/KERNEL-LAB.md for measurements and /work/shared/KERNEL.md for the kernel facts.
 *
 * One run, step by step:
 *  1. Host: make a temporary "lab directory" and write into it: init.sh (the guest's PID 1),
 *     run.pl (the guest-side runner), an fstab, the command's argv/env/cwd as NUL-separated
 *     files, the ordered list of kernel modules to load, and the deadline.
 *  2. Host: boot `linux.uml mem=..M rootfstype=hostfs rw init=<lab>/init.sh ...`.
 *  3. Guest init.sh: one `mount -a` (proc, sysfs, tmpfs on /run /tmp /dev/shm, devpts, and the
 *     lab directory re-exposed through hostfs), point the kernel's module autoloader at a
 *     wrapper, then run run.pl.
 *  4. Guest run.pl: load the modules (finit_module, dependencies first), bring lo up, print a
 *     "ready" marker on the console, run the command with stdout/stderr redirected to files in
 *     the lab directory, kill it at the deadline, write "exit N" / "signal N" / "timeout" to
 *     the status file, sync, power off.
 *  5. Host: read the files, kill what is left of UML (by PID), delete the lab directory.
 *
 * What the guest shares with the host (read this before running anything destructive):
 *  - The whole host filesystem, READ-WRITE, as host root (hostfs does every file operation with
 *    the UML process's credentials). A command that writes to /work/main/dist or /root/.npm in
 *    the lab writes the host's files.
 *  - Not shared: /proc, /sys, /dev (the guest's own), and /run, /tmp, /dev/shm (fresh tmpfs in
 *    the guest, so lab runs cannot leave state in the host's /run, e.g. xtables.lock or synhold's
 *    own state files, nor see the host's). Host directories under /tmp or /run that the command
 *    needs (its cwd, `share`) are mounted back in at the same path.
 *  - Not shared: the network. The guest has only its own `lo`; kernel state (qdiscs, iptables,
 *    sysctls, modules) is the guest kernel's and vanishes with it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  accessSync,
  constants as fsConstants,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statfsSync,
  statSync,
} from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface LabOptions {
  /** argv of the command; argv[0] is looked up in the command's PATH, as execvp does. */
  command: string[];
  /** Working directory inside the lab (same path as on the host). Default: process.cwd(). */
  cwd?: string;
  /**
   * The command's complete environment. Default: this process's environment, minus variables
   * that describe this process's own plumbing (NODE_TEST_CONTEXT, NODE_CHANNEL_FD, ...).
   */
  env?: Record<string, string>;
  /**
   * Kernel modules to load before the command runs (names like `sch_plug`; dependencies are
   * resolved from modules.dep). Default: DEFAULT_MODULES, minus any this kernel lacks.
   * Modules not listed are still loaded on demand by the kernel (request_module) where the
   * kernel asks for them, e.g. `tc qdisc add ... netem`.
   */
  modules?: string[];
  /** Wall-clock budget for the whole run, boot included. Default 120000. */
  timeoutMs?: number;
  /** Guest memory in MiB. Default 1024. */
  memMb?: number;
  /**
   * Extra host directories to make visible at the same path inside. Only needed for
   * directories under /tmp, /run or /dev/shm, which the guest otherwise covers with its own
   * tmpfs (the cwd is handled automatically).
   */
  share?: string[];
}

export interface LabResult {
  /** The command's exit code; null if it was killed by a signal or timed out. */
  exitCode: number | null;
  /** Name of the signal that killed the command (SIGKILL on timeout). */
  signal?: string;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Milliseconds from starting UML until the command was about to start (modules loaded). */
  bootMs: number;
  /** Milliseconds for the whole run, from starting UML until it exited. */
  durationMs: number;
}

/** What synhold's tests need: the plug qdisc and its neighbours, ifb/veth, NFQUEUE via iptables-legacy. */
export const DEFAULT_MODULES: readonly string[] = Object.freeze([
  'sch_plug',
  'sch_prio',
  'sch_ingress', // ingress and clsact
  'cls_u32',
  'cls_fw',
  'act_mirred',
  'act_gact',
  'ifb',
  'veth',
  'ipv6', // a module in Debian 12's UML: without it lo has no ::1
  'nfnetlink_queue',
  'x_tables',
  'xt_NFQUEUE',
  'xt_tcpudp', // -p tcp --dport
  'xt_mark',
  'ip_tables', // iptables-legacy tables; iptables-nft does not work in UML 6.1
  'iptable_raw',
  'iptable_mangle',
  'iptable_filter',
  'ip6_tables',
  'ip6table_raw',
  'ip6table_mangle',
  'ip6table_filter',
]);

const DEFAULT_TIMEOUT_MS = 120_000;
const DEFAULT_MEM_MB = 1024;
/** After the deadline the guest kills the command itself; the host kills UML this much later. */
const HARD_KILL_GRACE_MS = 3_000;
/** After SIGTERM, UML gets this long to kill its helper processes before we SIGKILL them. */
const TERM_GRACE_MS = 1_500;
const CONSOLE_KEEP_BYTES = 256 * 1024;
const DEBIAN_KERNEL = '/usr/bin/linux.uml';
const DEBIAN_MODULES_ROOT = '/usr/lib/uml/modules';

/**
 * Kernel command line, besides mem/root/init/console.
 *  - `con=null con0=null,fd:1 ssl=null`: console 0 writes to our stdout pipe and reads nothing
 *    (CI has no stdin); no other consoles or serial lines, so no host ptys are allocated.
 *  - `quiet`: kernel chatter off the console (panics still print).
 *  - `initcall_blacklist=...`: skip boot-time benchmarks that nothing here needs. raid6 (6.1:
 *    raid6_select_algo, 7.x: raid6_init) benchmarks its algorithms for ~0.85 s and the xor
 *    calibration another ~0.1 s; they only matter for md RAID5/6 and btrfs RAID56. zswap is
 *    useless without swap (~40 ms). Unknown names are ignored, so one list serves both kernels.
 *  - `pty.legacy_count=0`: 6.1 allocates 256 legacy BSD pty pairs at boot, ~270 ms here.
 *    Unix98 ptys (/dev/pts) still work.
 */
const KERNEL_TUNING = [
  'con=null',
  'con0=null,fd:1',
  'ssl=null',
  'quiet',
  'initcall_blacklist=raid6_select_algo,raid6_init,calibrate_xor_blocks,init_zswap,zswap_init',
  'pty.legacy_count=0',
];

/** Variables describing this process's plumbing, meaningless (or harmful) for the lab command. */
const ENV_NOT_INHERITED = [
  'NODE_TEST_CONTEXT', // node --test children talk to their runner through it
  'NODE_CHANNEL_FD', // an IPC fd that does not exist inside the guest
  'NODE_CHANNEL_SERIALIZATION_MODE',
  'NODE_UNIQUE_ID', // cluster worker id
];

// ---------------------------------------------------------------------------------------------
// Finding a kernel

interface LabSetup {
  kernel: string;
  version: string;
  modulesDir: string;
  /** Where the kernel choice came from, for messages. */
  origin: string;
  /** Path to a C compiler when the xstate shim must be built (see XSTATE_SHIM_C). */
  shimCompiler?: string;
  perl: string;
  mount: string;
  modprobe?: string;
  /**
   * argv prefix UML is started through so that it dies with us (see deathWrapper); empty when
   * this host offers neither setpriv nor a usable PID namespace.
   */
  wrapper: string[];
}

let cachedSetup: { key: string; value: LabSetup | { error: string } } | undefined;

/**
 * Whether runInLab can work here, and if not why. Checks the kernel binary, its module
 * directory (found by asking the kernel for its version), and the host tools the guest uses.
 *
 * Kernel choice, first usable wins:
 *  1. SYNHOLD_UML_KERNEL (and optionally SYNHOLD_UML_MODULES) from the environment;
 *  2. Debian's /usr/bin/linux.uml with /usr/lib/uml/modules/<its version>;
 *  3. the kernel scripts/fetch-uml.sh downloaded, named in <repo>/.cache/uml/env.
 * Debian 12's 6.1 is preferred over the downloaded 7.x because the 7.x build lacks
 * iptables-legacy and nftables' ip family, so NFQUEUE rules cannot be added in it.
 */
export function labAvailable(): { ok: boolean; reason?: string } {
  const setup = findSetup();
  return 'error' in setup ? { ok: false, reason: setup.error } : { ok: true };
}

/** The kernel the lab would use, for logs and docs (throws if the lab is unavailable). */
export function labKernel(): { kernel: string; version: string; modulesDir: string; origin: string; xstateShim: boolean } {
  const s = requireSetup();
  return { kernel: s.kernel, version: s.version, modulesDir: s.modulesDir, origin: s.origin, xstateShim: !!s.shimCompiler };
}

function requireSetup(): LabSetup {
  const setup = findSetup();
  if ('error' in setup) throw new Error(`kernel lab unavailable: ${setup.error}`);
  return setup;
}

function findSetup(): LabSetup | { error: string } {
  const key = `${process.env.SYNHOLD_UML_KERNEL ?? ''}\0${process.env.SYNHOLD_UML_MODULES ?? ''}`;
  if (cachedSetup?.key === key) return cachedSetup.value;
  const value = computeSetup();
  cachedSetup = { key, value };
  return value;
}

function computeSetup(): LabSetup | { error: string } {
  const perl = firstExecutable(['/usr/bin/perl', '/bin/perl']);
  if (!perl) return { error: 'perl not found (/usr/bin/perl runs the command inside the lab; Debian package perl-base)' };
  const mount = firstExecutable(['/usr/bin/mount', '/bin/mount']);
  if (!mount) return { error: 'mount not found (/usr/bin/mount; Debian package mount)' };
  const modprobe = firstExecutable(['/usr/sbin/modprobe', '/sbin/modprobe']);
  const tools = { perl, mount, ...(modprobe ? { modprobe } : {}), wrapper: deathWrapper() };

  const candidates: Array<{ origin: string; kernel: string; modulesDir?: string }> = [];
  const envKernel = process.env.SYNHOLD_UML_KERNEL;
  if (envKernel) {
    candidates.push({
      origin: 'SYNHOLD_UML_KERNEL',
      kernel: envKernel,
      ...(process.env.SYNHOLD_UML_MODULES ? { modulesDir: process.env.SYNHOLD_UML_MODULES } : {}),
    });
  } else {
    candidates.push({ origin: 'Debian package user-mode-linux', kernel: DEBIAN_KERNEL });
    const fetched = readFetchedKernelEnv();
    if (fetched) candidates.push({ origin: '.cache/uml/env (scripts/fetch-uml.sh)', ...fetched });
  }
  const problems: string[] = [];
  for (const c of candidates) {
    const r = checkKernel(c.kernel, c.modulesDir);
    if ('error' in r) {
      problems.push(`${c.kernel} (${c.origin}): ${r.error}`);
      continue;
    }
    return { kernel: c.kernel, origin: c.origin, ...r, ...tools };
  }
  return { error: problems.join('; ') + ". Install Debian's user-mode-linux and kmod (apt-get install user-mode-linux kmod), or run scripts/install-deps.sh" };
}

function checkKernel(kernel: string, modulesDirHint?: string): { version: string; modulesDir: string; shimCompiler?: string } | { error: string } {
  try {
    accessSync(kernel, fsConstants.X_OK);
  } catch {
    return { error: 'not found or not executable' };
  }
  let version: string;
  try {
    // UML answers --version without booting.
    version = execFileSync(kernel, ['--version'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch (e) {
    return { error: `\`${kernel} --version\` failed: ${(e as Error).message}` };
  }
  if (!/^\d+\.\d+/.test(version)) return { error: `unexpected --version output ${JSON.stringify(version)}` };
  let modulesDir = modulesDirHint;
  if (!modulesDir) {
    modulesDir = path.join(DEBIAN_MODULES_ROOT, version);
    if (!existsSync(modulesDir)) {
      const have = existsSync(DEBIAN_MODULES_ROOT) ? readdirSync(DEBIAN_MODULES_ROOT) : [];
      return { error: `no modules for ${version} under ${DEBIAN_MODULES_ROOT} (found: ${have.join(', ') || 'nothing'})` };
    }
  }
  if (!existsSync(path.join(modulesDir, 'modules.dep'))) return { error: `${modulesDir}/modules.dep missing` };
  // Modules only load into the exact kernel they were built for (vermagic).
  if (path.basename(modulesDir) !== version) return { error: `modules directory ${modulesDir} does not match kernel version ${version}` };

  // UML before 7.0 sizes the FPU state it moves with ptrace for AVX-512 at most; on CPUs with AMX
  // the host kernel rejects that size and UML panics at its first user process ("ptrace set fp
  // regs failed, errno = 14"). The xstate shim (below) fixes that, but needs a C compiler.
  const major = Number(version.split('.')[0]);
  if (major < 7) {
    const cc = findCompiler();
    if (cc) return { version, modulesDir, shimCompiler: cc };
    if (cpuHasAmx()) return { error: `UML ${version} cannot boot on this AMX CPU without the xstate shim, and no C compiler (cc/gcc) was found to build it` };
  }
  return { version, modulesDir };
}

function readFetchedKernelEnv(): { kernel: string; modulesDir: string } | undefined {
  const root = repoRoot();
  if (!root) return undefined;
  const file = path.join(root, '.cache', 'uml', 'env');
  if (!existsSync(file)) return undefined;
  const vars: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) vars[m[1]!] = m[2]!;
  }
  const kernel = vars.SYNHOLD_UML_KERNEL;
  const modulesDir = vars.SYNHOLD_UML_MODULES;
  return kernel && modulesDir ? { kernel, modulesDir } : undefined;
}

/**
 * The kernel lab must die with the node process that started it, whatever kills that process
 * (SIGKILL from an outer timeout included: no 'exit' hook runs then). UML runs detached, in its
 * own session, and lives on otherwise: CI once saw an orphaned UML run its guest tests against
 * a deleted checkout a minute after the run that started it was killed. Two layers:
 *
 *  - `setpriv --pdeathsig KILL`: the process we spawn gets SIGKILL when its parent dies. The
 *    kernel sends it when the *thread* that forked it exits; Node forks from the thread that
 *    calls spawn(), so runInLab must be called from the main thread (or a worker that lives as
 *    long as the lab run), which is how everything here calls it.
 *  - `unshare --pid --fork --kill-child`: UML runs as PID 1 of a PID namespace of its own, and
 *    unshare (the one setpriv guards) SIGKILLs it when unshare dies. When a namespace's PID 1
 *    dies the kernel kills every process in it, so UML's helper processes go too, even ones
 *    that left UML's process group or were reparented.
 *
 * setpriv execs unshare in place, so the PID we spawn is unshare's, and UML and its helpers
 * still share its process group (the by-PID cleanup below keeps working). unshare waits for UML
 * and exits with its status (or dies of its signal), so the exit we see is UML's.
 * The PID namespace needs CAP_SYS_ADMIN: it is probed once and left out where it fails.
 */
function deathWrapper(): string[] {
  const setpriv = firstExecutable(['/usr/bin/setpriv', '/bin/setpriv']);
  const unshare = firstExecutable(['/usr/bin/unshare', '/bin/unshare']);
  const out: string[] = [];
  if (setpriv) out.push(setpriv, '--pdeathsig', 'KILL', '--');
  if (unshare) {
    try {
      execFileSync(unshare, ['--pid', '--fork', '--kill-child', '--', 'true'], { timeout: 10_000, stdio: 'ignore' });
      out.push(unshare, '--pid', '--fork', '--kill-child', '--');
    } catch {
      /* no PID namespaces here (no CAP_SYS_ADMIN): pdeathsig alone */
    }
  }
  return out;
}

/** The checkout this module lives in (the directory holding synhold's package.json). */
function repoRoot(): string | undefined {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'synhold') return dir;
      } catch {
        /* not ours */
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

function firstExecutable(paths: string[]): string | undefined {
  for (const p of paths) {
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

function findCompiler(): string | undefined {
  const dirs = (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':').filter(Boolean);
  const names = process.env.CC && !process.env.CC.includes(' ') ? [process.env.CC, 'cc', 'gcc'] : ['cc', 'gcc'];
  for (const n of names) {
    if (n.includes('/')) {
      if (firstExecutable([n])) return n;
      continue;
    }
    const hit = firstExecutable(dirs.map((d) => path.join(d, n)));
    if (hit) return hit;
  }
  return undefined;
}

function cpuHasAmx(): boolean {
  try {
    const flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
    return /\bamx_tile\b/.test(flags);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// The xstate shim (only for UML < 7 on hosts whose XSAVE area is bigger than UML expects)

/**
 * LD_PRELOAD library for the UML *host* process. UML keeps each guest task's FPU state in a
 * fixed buffer (2696 bytes in Debian 12's 6.1: x87/SSE, AVX, AVX-512, PKRU) and moves it with
 * PTRACE_GETREGSET/SETREGSET(NT_X86_XSTATE). The host kernel's SETREGSET insists on a buffer of
 * exactly its own user XSAVE size (about 11 KiB with AMX tile data), so it answers EFAULT and
 * UML panics before init runs.
 *
 * The shim keeps UML's view and gives the host what it wants: GET reads the full area and hands
 * UML the prefix; SET reads the full area of the (stopped) tracee, overlays UML's prefix, keeps
 * the host's XSTATE_BV bits for the components the prefix does not cover, and writes it back.
 * The uncovered components are AMX: guest programs cannot enable AMX (UML does not forward
 * arch_prctl(ARCH_REQ_XCOMP_PERM)), so that state is always in its init state and nothing is lost.
 * One full GET per SET is saved by remembering, per tracee PID, the area read by the last GET
 * until the tracee runs again.
 *
 * Everything else, and any call where UML's buffer is already big enough, goes straight through.
 */
const XSTATE_SHIM_C = `/* synhold kernel lab: xstate size shim for User-Mode Linux < 7 (generated from bench/src/lab/uml.ts). */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define XSAVE_LEGACY 512 /* x87 + SSE area */
#define XSAVE_HDR_END 576 /* legacy area + 64-byte XSAVE header (XSTATE_BV at 512) */
#define SLOTS 256

typedef long (*ptrace_fn)(int, ...);
static ptrace_fn real_ptrace;
static size_t full_size; /* the host kernel's user XSAVE size */
struct slot { long pid; int fresh; unsigned char *buf; };
static struct slot slots[SLOTS];

static long raw(long req, long pid, void *addr, void *data) {
  return syscall(SYS_ptrace, req, pid, addr, data);
}

/* XSTATE_BV bits of the components that lie entirely inside the first len bytes (standard format).
 * CPUID traps to the hypervisor in a VM (slow), so callers cache the answer. */
static uint64_t covered_mask(size_t len) {
  uint64_t mask = len >= XSAVE_LEGACY ? 3 : 0;
  for (unsigned i = 2; i < 63; i++) {
    unsigned size, offset, c, d;
    __cpuid_count(0xd, i, size, offset, c, d);
    if (size != 0 && (size_t)offset + size <= len) mask |= 1ull << i;
  }
  return mask;
}

long ptrace(enum __ptrace_request req, ...) {
  va_list ap;
  va_start(ap, req);
  long pid = va_arg(ap, long);
  void *addr = va_arg(ap, void *);
  void *data = va_arg(ap, void *);
  va_end(ap);
  if (!real_ptrace) real_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
  if ((req != PTRACE_GETREGSET && req != PTRACE_SETREGSET) || (long)addr != NT_X86_XSTATE)
    return real_ptrace(req, pid, addr, data);

  struct iovec *iov = data;
  if (!full_size) {
    static unsigned char probe[256 * 1024];
    struct iovec big = { probe, sizeof probe };
    if (raw(PTRACE_GETREGSET, pid, addr, &big) < 0) return -1;
    full_size = big.iov_len;
  }
  if (iov->iov_len >= full_size || iov->iov_len < XSAVE_HDR_END) return raw(req, pid, addr, data);

  struct slot *s = &slots[(unsigned long)pid % SLOTS];
  if (!s->buf && !(s->buf = aligned_alloc(64, (full_size + 63) & ~(size_t)63))) return raw(req, pid, addr, data);
  struct iovec big = { s->buf, full_size };
  if (req == PTRACE_GETREGSET || s->pid != pid || !s->fresh) {
    s->fresh = 0;
    if (raw(PTRACE_GETREGSET, pid, addr, &big) < 0) return -1;
    s->pid = pid;
    s->fresh = 1;
    if (req == PTRACE_GETREGSET) {
      memcpy(iov->iov_base, s->buf, iov->iov_len);
      return 0;
    }
  }
  static size_t mask_len;
  static uint64_t mask;
  if (mask_len != iov->iov_len) { mask = covered_mask(iov->iov_len); mask_len = iov->iov_len; }
  const unsigned char *mine = iov->iov_base;
  uint64_t host_bv, uml_bv;
  memcpy(&host_bv, s->buf + XSAVE_LEGACY, 8);
  memcpy(&uml_bv, mine + XSAVE_LEGACY, 8);
  memcpy(s->buf, mine, XSAVE_LEGACY);
  memcpy(s->buf + XSAVE_HDR_END, mine + XSAVE_HDR_END, iov->iov_len - XSAVE_HDR_END);
  uint64_t bv = (uml_bv & mask) | (host_bv & ~mask);
  memcpy(s->buf + XSAVE_LEGACY, &bv, 8);
  s->fresh = 0; /* the tracee is about to run and change its state */
  return raw(PTRACE_SETREGSET, pid, addr, &big);
}
`;

/** Builds the shim (cached in <repo>/.cache/lab by content hash, else into the run's own directory). */
async function buildShim(cc: string, labDir: string): Promise<string> {
  const hash = createHash('sha256').update(XSTATE_SHIM_C).digest('hex').slice(0, 16);
  const root = repoRoot();
  let dir = labDir;
  if (root) {
    const cacheDir = path.join(root, '.cache', 'lab');
    try {
      mkdirSync(cacheDir, { recursive: true, mode: 0o755 });
      dir = cacheDir;
    } catch {
      /* read-only checkout: build per run */
    }
  }
  const so = path.join(dir, `xstate-shim-${hash}.so`);
  if (existsSync(so)) return so;
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const src = path.join(labDir, 'xstate-shim.c');
  const tmp = `${so}.${tag}.tmp`;
  await fsp.writeFile(src, XSTATE_SHIM_C);
  const r = await collect(spawn(cc, ['-shared', '-fPIC', '-O2', '-Wall', '-o', tmp, src, '-ldl'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  if (r.code !== 0) {
    await fsp.rm(tmp, { force: true });
    throw new Error(`kernel lab: building the xstate shim with ${cc} failed:\n${r.stdout}${r.stderr}`);
  }
  renameSync(tmp, so); // atomic: concurrent builders race harmlessly
  return so;
}

function collect(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

// ---------------------------------------------------------------------------------------------
// Kernel modules

interface ModuleIndex {
  dir: string;
  /** module name (with _ for -) -> path relative to dir, and its dependencies' names */
  modules: Map<string, { file: string; deps: string[] }>;
  builtin: Set<string>;
}

const moduleIndexes = new Map<string, ModuleIndex>();

function moduleName(file: string): string {
  return path
    .basename(file)
    .replace(/\.ko(\.(xz|gz|zst))?$/, '')
    .replace(/-/g, '_');
}

function moduleIndex(dir: string): ModuleIndex {
  const known = moduleIndexes.get(dir);
  if (known) return known;
  const modules = new Map<string, { file: string; deps: string[] }>();
  for (const line of readFileSync(path.join(dir, 'modules.dep'), 'utf8').split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const file = line.slice(0, colon).trim();
    const deps = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(moduleName);
    modules.set(moduleName(file), { file, deps });
  }
  const builtin = new Set<string>();
  const builtinFile = path.join(dir, 'modules.builtin');
  if (existsSync(builtinFile)) {
    for (const line of readFileSync(builtinFile, 'utf8').split('\n')) if (line.trim()) builtin.add(moduleName(line.trim()));
  }
  const index = { dir, modules, builtin };
  moduleIndexes.set(dir, index);
  return index;
}

/**
 * Absolute paths of the .ko files to load, dependencies before dependents (depth-first,
 * post-order over modules.dep). Built-in modules need no loading. Unknown names throw, unless
 * `optional` (used for DEFAULT_MODULES, which names modules some kernels build in or lack).
 */
export function resolveModules(modulesDir: string, names: readonly string[], optional = false): string[] {
  const index = moduleIndex(modulesDir);
  const order: string[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (name: string, from?: string): void => {
    if (done.has(name) || index.builtin.has(name)) return;
    const mod = index.modules.get(name);
    if (!mod) {
      if (optional && from === undefined) return;
      throw new Error(`kernel lab: no module ${name}${from ? ` (needed by ${from})` : ''} in ${modulesDir}`);
    }
    if (visiting.has(name)) return; // modules.dep has no cycles; be safe anyway
    visiting.add(name);
    for (const dep of mod.deps) visit(dep, name);
    visiting.delete(name);
    done.add(name);
    order.push(path.join(modulesDir, mod.file));
  };
  for (const n of names) visit(n.replace(/-/g, '_').replace(/\.ko$/, ''));
  return order;
}

// ---------------------------------------------------------------------------------------------
// Guest-side scripts

/**
 * PID 1 of the guest. Kept to three processes (mount, perl, and the command): inside UML every
 * process start costs 10-100 ms (each page fault and syscall of the guest is a ptrace round trip
 * on the host), against 1-3 ms on the host.
 * No `set -e`: if PID 1 exits, the kernel panics and the run ends with no result; instead every
 * failure path falls through to a power-off.
 */
function initScript(lab: string, tag: string, setup: LabSetup): string {
  const q = shQuote;
  return `#!/bin/sh
# synhold kernel lab: PID 1 of a User-Mode Linux guest (generated by bench/src/lab/uml.ts).
# The root filesystem is the host's / through hostfs, READ-WRITE: write only to tmpfs or the lab dir.
lab=${q(lab)}
echo ${q(`${tag}:init`)}
# proc, sysfs, fresh tmpfs on /run /tmp /dev/shm (not the host's), devpts, then the lab directory
# (and any shared directory) mounted back in through hostfs where a tmpfs now covers it.
# -n: do not record the mounts in /run/mount/utab (mount would warn: /run/mount does not exist).
${q(setup.mount)} -n -a -T "$lab/fstab" || echo ${q(`${tag}:mount-failed`)}
# The kernel loads modules on demand by running this (request_module): modprobe reading the
# UML kernel's modules, which are not under /lib/modules.
[ -x "$lab/modprobe" ] && echo "$lab/modprobe" > /proc/sys/kernel/modprobe
${q(setup.perl)} "$lab/run.pl" "$lab"
# run.pl powers off itself; reaching this line means it could not.
echo ${q(`${tag}:runner-failed`)}
sync
echo o > /proc/sysrq-trigger
halt -f
`;
}

/**
 * The guest-side runner, in Perl because it needs raw syscalls (finit_module, setitimer,
 * reboot) in one process, and perl-base is Essential in Debian (always installed). Loading
 * 19 modules with `insmod`, one process each, took 2.0 s in UML 6.1; finit_module from here
 * took 0.2 s.
 *
 * x86_64 syscall numbers: sync 162, reboot 169, finit_module 313, setitimer 38, gettimeofday 96.
 */
const RUNNER_PL = `# synhold kernel lab: guest-side runner (generated by bench/src/lab/uml.ts). Started by init.sh.
use strict;
my $lab = $ARGV[0];
$| = 1; # markers go to the console at once; the host times the boot by them

sub slurp { my ($f) = @_; open(my $h, '<', $f) or return undef; local $/; my $d = <$h>; close $h; return $d }
sub nul_list { my @l = split /\\0/, $_[0], -1; pop @l; return @l }
sub put {
  my ($name, $data) = @_;
  open(my $h, '>', "$lab/$name.tmp") or return;
  print $h $data; close $h; rename("$lab/$name.tmp", "$lab/$name");
}
sub power_off {
  syscall(162); # sync: hostfs writes sit in the guest page cache until then
  syscall(169, 0xfee1dead, 672274793, 0x4321fedc, 0); # reboot(LINUX_REBOOT_CMD_POWER_OFF)
  exit 1; # only if reboot failed; init.sh then tries the sysrq trigger and halt
}
my $tag = slurp("$lab/tag");
defined $tag or do { print "synhold-lab: lab directory $lab not visible in the guest\\n"; power_off() };
sub setup_failed { my ($m) = @_; print "$tag:setup-failed $m\\n"; put('status', "setup $m"); power_off() }
sub now_ms { my $tv = "\\0" x 16; syscall(96, $tv, 0); my ($s, $us) = unpack('q q', $tv); return $s * 1000 + int($us / 1000) }
sub arm_timer { # setitimer(ITIMER_REAL); 0 disarms
  my ($ms) = @_;
  my $new = pack('q4', 0, 0, int($ms / 1000), ($ms % 1000) * 1000);
  my $old = "\\0" x 32;
  syscall(38, 0, $new, $old);
}

# Modules, dependencies first (the host ordered them). EEXIST (17): already there.
for my $ko (grep { length } split /\\n/, slurp("$lab/modules")) {
  open(my $h, '<', $ko) or setup_failed("open $ko: $!");
  my $params = '';
  my $flags = $ko =~ /\\.ko$/ ? 0 : 4; # MODULE_INIT_COMPRESSED_FILE for .ko.xz/.zst/.gz
  syscall(313, fileno($h), $params, $flags) == 0 or $! == 17 or setup_failed("load $ko: $!");
  close $h;
}

# lo up (SIOCGIFFLAGS 0x8913 / SIOCSIFFLAGS 0x8914 on struct ifreq: name[16], flags at 16).
# After the modules, so that ipv6 (a module in 6.1) sees lo come up and gives it ::1.
socket(my $sock, 2, 2, 0) or setup_failed("socket: $!");
my $ifr = pack('a16 x24', 'lo');
ioctl($sock, 0x8913, $ifr) or setup_failed("SIOCGIFFLAGS lo: $!");
my $up = pack('a16 S x22', 'lo', unpack('x16 S', $ifr) | 1);
ioctl($sock, 0x8914, $up) or setup_failed("SIOCSIFFLAGS lo: $!");
close $sock;

my @argv = nul_list(slurp("$lab/argv"));
my %env = map { split(/=/, $_, 2) } nul_list(slurp("$lab/env"));
my $cwd = slurp("$lab/cwd");
my $deadline = slurp("$lab/deadline") + 0;

my ($pid, $timed_out) = (0, 0);
$SIG{ALRM} = sub { $timed_out = 1; kill('KILL', -$pid, $pid) if $pid > 0 };
print "$tag:ready\\n";
$pid = fork();
defined $pid or setup_failed("fork: $!");
if ($pid == 0) {
  $SIG{ALRM} = 'DEFAULT';
  setpgrp(0, 0); # own process group: the deadline kills the command and its children
  open(STDIN, '<', '/dev/null');
  open(STDOUT, '>', "$lab/stdout") or exit 125;
  open(STDERR, '>', "$lab/stderr") or exit 125;
  chdir($cwd) or do { print STDERR "synhold-lab: cannot chdir to $cwd: $!\\n"; exit 127 };
  %ENV = %env;
  { no warnings; exec { $argv[0] } @argv; } # execvp: PATH from the command's environment
  my $err = $!;
  print STDERR "synhold-lab: cannot execute $argv[0]: $err\\n";
  exit($err == 2 ? 127 : 126); # like a shell: not found 127, not executable 126
}
my $left = $deadline - now_ms();
if ($left > 0) { arm_timer($left) } else { $SIG{ALRM}->() }
waitpid($pid, 0);
my $st = $?;
arm_timer(0);
put('status', $timed_out ? 'timeout' : ($st & 127) ? 'signal ' . ($st & 127) : 'exit ' . ($st >> 8));
print "$tag:done\\n";
power_off();
`;

/** Directories the guest covers with its own tmpfs (or its own kernel's view). */
const GUEST_TMPFS = ['/tmp', '/run', '/dev/shm'];
const GUEST_PRIVATE = ['/proc', '/sys', '/dev'];

function under(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir + '/');
}

/** Paths written into fstab and the kernel command line: keep them free of separators. */
function checkPlainPath(p: string, what: string): void {
  if (!/^\/[A-Za-z0-9._/+@:~-]*$/.test(p)) {
    throw new Error(
      `kernel lab: ${what} ${JSON.stringify(p)} has characters the lab cannot pass through fstab/hostfs options (use letters, digits, . _ / + @ : ~ -)`,
    );
  }
}

function fstab(hostDirs: string[]): string {
  const lines = [
    'proc /proc proc rw,nosuid,nodev,noexec 0 0',
    'sysfs /sys sysfs rw,nosuid,nodev,noexec 0 0',
    // UML mounts devtmpfs on /dev itself (CONFIG_DEVTMPFS_MOUNT); mount -a skips it then.
    'devtmpfs /dev devtmpfs rw,nosuid,mode=755 0 0',
    'tmpfs /run tmpfs rw,nosuid,nodev,mode=755 0 0',
    'tmpfs /tmp tmpfs rw,nosuid,nodev,mode=1777 0 0',
    'tmpfs /dev/shm tmpfs rw,nosuid,nodev,mode=1777,x-mount.mkdir 0 0',
    'devpts /dev/pts devpts rw,nosuid,noexec,mode=620,ptmxmode=666,x-mount.mkdir 0 0',
  ];
  // hostfs's mount data is the host path to expose; x-mount.mkdir makes the mount point in the tmpfs.
  for (const d of hostDirs) lines.push(`hostfs ${d} hostfs ${d},x-mount.mkdir 0 0`);
  return lines.join('\n') + '\n';
}

/** One word for sh, whatever it contains. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

// ---------------------------------------------------------------------------------------------
// Running

/** Running UMLs (PID -> lab directory). */
const liveLabs = new Map<number, { dir: string; groups: Set<number> }>();
let exitHookInstalled = false;

/**
 * If this process exits while a lab runs (process.exit, or a signal handler that calls it, as
 * the CLI's does), take the lab down with it: UML runs in its own session, so nothing else would
 * stop it before its deadline. Synchronous, as 'exit' handlers must be.
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const [pid, { dir, groups }] of liveLabs) {
      killByPid([pid, ...groupMembers(groups)], 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

/** PIDs whose process group is `pgid` (UML's helpers stay in the group of the UML we started). */
function groupMembers(pgids: ReadonlySet<number>): number[] {
  return procStats()
    .filter((p) => pgids.has(p.pgrp))
    .map((p) => p.pid);
}

/** PIDs whose parent is `ppid`. */
function childrenOf(ppid: number): number[] {
  return procStats()
    .filter((p) => p.ppid === ppid)
    .map((p) => p.pid);
}

/** pid, ppid and process group of every process, from /proc (processes that exit meanwhile are left out). */
function procStats(): Array<{ pid: number; ppid: number; pgrp: number }> {
  const out: Array<{ pid: number; ppid: number; pgrp: number }> = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      // pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.push({ pid: Number(e), ppid: Number(fields[1]), pgrp: Number(fields[2]) });
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

function killByPid(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

function signalName(n: number): string {
  const hit = Object.entries(os.constants.signals).find(([, v]) => v === n);
  return hit ? hit[0] : `SIG${n}`;
}

function defaultEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !ENV_NOT_INHERITED.includes(k)) env[k] = v;
  return env;
}

/**
 * UML backs guest memory with a file in $TMPDIR, else /dev/shm. A small /dev/shm (Docker's
 * default is 64 MiB) would SIGBUS the guest once it touches more than that, so fall back to
 * the lab directory's filesystem then.
 */
function memoryDir(memMb: number, labDir: string): string | undefined {
  try {
    const st = statfsSync('/dev/shm');
    if (st.bavail * st.bsize >= (memMb + 256) * 1024 * 1024) return undefined;
  } catch {
    /* no /dev/shm */
  }
  return labDir;
}

/**
 * Runs `opts.command` inside a fresh UML guest and returns how it ended. Throws when the lab
 * is unavailable, when setup inside the guest fails (e.g. a module does not load), or when
 * the guest dies without a result (e.g. a kernel panic); the error carries the console tail.
 * A command that outlives opts.timeoutMs is killed: timedOut is true and exitCode null.
 */
export async function runInLab(opts: LabOptions): Promise<LabResult> {
  const setup = requireSetup();
  if (!Array.isArray(opts.command) || opts.command.length === 0 || opts.command.some((a) => typeof a !== 'string')) {
    throw new TypeError('runInLab: command must be a non-empty array of strings');
  }
  if (opts.command.some((a) => a.includes('\0'))) throw new TypeError('runInLab: command arguments cannot contain NUL');
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const memMb = opts.memMb ?? DEFAULT_MEM_MB;
  if (!(timeoutMs > 0)) throw new RangeError('runInLab: timeoutMs must be positive');
  if (!Number.isInteger(memMb) || memMb < 64) throw new RangeError('runInLab: memMb must be an integer >= 64');

  const cwd = realpathSync(path.resolve(opts.cwd ?? process.cwd()));
  if (!statSync(cwd).isDirectory()) throw new Error(`runInLab: cwd ${cwd} is not a directory`);
  const env = opts.env ? { ...opts.env } : defaultEnv();
  for (const [k, v] of Object.entries(env)) {
    if (k === '' || k.includes('=') || k.includes('\0') || String(v).includes('\0'))
      throw new TypeError(`runInLab: bad environment variable ${JSON.stringify(k)}`);
  }
  const modules = opts.modules ? resolveModules(setup.modulesDir, opts.modules) : resolveModules(setup.modulesDir, DEFAULT_MODULES, true);

  const lab = realpathSync(await fsp.mkdtemp(path.join(os.tmpdir(), 'synhold-lab-')));
  const started = Date.now();
  let child: ChildProcess | undefined;
  const groups = new Set<number>();
  try {
    checkPlainPath(lab, 'temporary directory');
    // Host directories the guest would otherwise not see: those under its tmpfs mounts.
    const hostDirs = new Set<string>();
    const wanted: Array<[string, string]> = [
      [lab, 'lab directory'],
      [cwd, 'cwd'],
    ];
    for (const s of opts.share ?? []) wanted.push([realpathSync(path.resolve(s)), 'shared directory']);
    for (const [dir, what] of wanted) {
      if (GUEST_PRIVATE.some((p) => under(dir, p)) && !GUEST_TMPFS.some((p) => under(dir, p))) {
        throw new Error(`runInLab: ${what} ${dir} is inside ${GUEST_PRIVATE.find((p) => under(dir, p))}, which the guest kernel provides itself`);
      }
      if (GUEST_TMPFS.some((p) => under(dir, p))) {
        checkPlainPath(dir, what);
        if (!statSync(dir).isDirectory()) throw new Error(`runInLab: ${what} ${dir} is not a directory`);
        hostDirs.add(dir);
      }
    }

    const nonce = randomBytes(6).toString('hex');
    const tag = `synhold-lab:${nonce}`;
    const deadline = started + timeoutMs;
    const nul = (xs: string[]): string => xs.map((x) => x + '\0').join('');
    await Promise.all([
      fsp.writeFile(path.join(lab, 'tag'), tag),
      fsp.writeFile(path.join(lab, 'argv'), nul(opts.command)),
      fsp.writeFile(path.join(lab, 'env'), nul(Object.entries(env).map(([k, v]) => `${k}=${v}`))),
      fsp.writeFile(path.join(lab, 'cwd'), cwd),
      fsp.writeFile(path.join(lab, 'deadline'), String(deadline)),
      fsp.writeFile(path.join(lab, 'modules'), modules.join('\n') + '\n'),
      fsp.writeFile(path.join(lab, 'fstab'), fstab([...hostDirs])),
      fsp.writeFile(path.join(lab, 'run.pl'), RUNNER_PL),
      fsp.writeFile(path.join(lab, 'init.sh'), initScript(lab, tag, setup), { mode: 0o755 }),
    ]);
    if (setup.modprobe) {
      // modprobe -d ROOT looks for ROOT/lib/modules/<version>; the UML modules live elsewhere.
      const modroot = path.join(lab, 'modroot', 'lib', 'modules');
      await fsp.mkdir(modroot, { recursive: true });
      await fsp.symlink(setup.modulesDir, path.join(modroot, setup.version));
      await fsp.writeFile(path.join(lab, 'modprobe'), `#!/bin/sh\nexec ${shQuote(setup.modprobe)} -d ${shQuote(path.join(lab, 'modroot'))} "$@"\n`, {
        mode: 0o755,
      });
    }
    const shim = setup.shimCompiler ? await buildShim(setup.shimCompiler, lab) : undefined;

    // UML needs none of our environment. But Debian unstable's UML 7.2.7 dies before init
    // ("start_userspace : expected SIGSTOP, got status = 2816") when its environment is empty or
    // holds only PATH (measured: any second variable fixes it), so it always gets more than PATH.
    const umlEnv: Record<string, string> = { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', HOME: lab, SYNHOLD_LAB: '1' };
    if (shim) umlEnv.LD_PRELOAD = shim;
    const memDir = memoryDir(memMb, lab);
    if (memDir) umlEnv.TMPDIR = memDir;
    const args = [
      `mem=${memMb}M`,
      'rootfstype=hostfs',
      'rw',
      `init=${lab}/init.sh`,
      // UML's pid file and mconsole socket go here instead of ~/.uml/<random>/
      `uml_dir=${lab}`,
      'umid=uml',
      ...KERNEL_TUNING,
    ];

    // detached: UML gets its own session and process group, so its helper processes can be
    // found (and killed) by process group, and a Ctrl-C aimed at us does not hit it half-way.
    const spawnedAt = Date.now();
    // Through setup.wrapper: UML dies with this process, even by SIGKILL (deathWrapper).
    const argv = [...setup.wrapper, setup.kernel, ...args];
    const proc = spawn(argv[0]!, argv.slice(1), { cwd: lab, env: umlEnv, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    if (proc.pid !== undefined) {
      groups.add(proc.pid);
      liveLabs.set(proc.pid, { dir: lab, groups });
      installExitHook();
    }
    // Process groups holding the lab's processes: the one we spawned leads its own; behind the
    // wrapper, unshare's child (UML) starts a session of its own, which its helpers share. It is
    // looked up at UML's first console output (it exists by then) and again before any kill.
    const noteUmlGroup = (): Set<number> => {
      if (proc.pid !== undefined && setup.wrapper.length > 0) for (const c of childrenOf(proc.pid)) groups.add(c);
      return groups;
    };
    let consoleText = '';
    let readyAt: number | undefined;
    const onData = (d: Buffer): void => {
      if (consoleText === '') noteUmlGroup();
      consoleText += d.toString('utf8');
      if (readyAt === undefined && consoleText.includes(`${tag}:ready`)) readyAt = Date.now();
      if (consoleText.length > CONSOLE_KEEP_BYTES * 2) consoleText = consoleText.slice(-CONSOLE_KEEP_BYTES);
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);

    let hardKilled = false;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      proc.once('error', reject);
      proc.once('exit', (code, signal) => resolve({ code, signal }));
    });
    const closed = new Promise<void>((resolve) => proc.once('close', () => resolve()));
    let exit = await raceTimeout(exited, Math.max(0, deadline + HARD_KILL_GRACE_MS - Date.now()));
    if (exit === undefined) {
      // The guest did not stop by itself: SIGTERM lets UML kill its helpers and remove its
      // uml_dir; whatever remains after the grace period gets SIGKILL.
      hardKilled = true;
      // With the wrapper, UML is the child of the process we spawned (unshare blocks SIGTERM).
      killByPid([proc.pid!, ...childrenOf(proc.pid!)], 'SIGTERM');
      exit = await raceTimeout(exited, TERM_GRACE_MS);
      if (exit === undefined) {
        killByPid([proc.pid!, ...groupMembers(noteUmlGroup())], 'SIGKILL');
        exit = await exited;
      }
    }
    const endedAt = Date.now();
    // Helpers normally die with UML; make sure (by PID, members of UML's process group).
    killByPid(groupMembers(groups), 'SIGKILL');
    liveLabs.delete(proc.pid!);
    // The last console output may still be in the pipe; do not wait forever for a helper's copy.
    await raceTimeout(closed, 1000);
    proc.stdout!.destroy();
    proc.stderr!.destroy();
    child = undefined;

    const [status, stdout, stderr] = await Promise.all(
      ['status', 'stdout', 'stderr'].map((f) => fsp.readFile(path.join(lab, f), 'utf8').catch(() => undefined)),
    );
    if (process.env.SYNHOLD_LAB_DEBUG)
      process.stderr.write(`--- kernel lab console (${setup.kernel}) ---\n${consoleText}\n--- status: ${status ?? '(none)'} ---\n`);
    const result = (exitCode: number | null, timedOut: boolean, signal?: string): LabResult => ({
      exitCode,
      ...(signal ? { signal } : {}),
      stdout: stdout ?? '',
      stderr: stderr ?? '',
      timedOut,
      bootMs: (readyAt ?? endedAt) - spawnedAt,
      durationMs: endedAt - spawnedAt,
    });
    const m = /^(exit|signal) (\d+)$/.exec(status ?? '');
    if (m) return m[1] === 'exit' ? result(Number(m[2]), false) : result(null, false, signalName(Number(m[2])));
    if (status === 'timeout' || (status === undefined && hardKilled)) return result(null, true, 'SIGKILL');
    if (status?.startsWith('setup ')) throw new Error(`kernel lab: setup inside the guest failed: ${status.slice(6)}\n${consoleTail(consoleText)}`);
    const how = exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`;
    let hint = '';
    if (consoleText.includes('ptrace set fp regs failed'))
      hint = "\nhint: this UML cannot move this CPU's FPU state (AMX); it needs the xstate shim (a C compiler) or UML >= 7.";
    else if (consoleText.includes('Kernel panic')) hint = '\nhint: the guest kernel panicked; see the console above.';
    throw new Error(`kernel lab: UML (${setup.kernel}) ended with ${how} without reporting a result${hint}\n${consoleTail(consoleText)}`);
  } finally {
    if (child?.pid !== undefined) {
      // Only on an exception between spawn and exit.
      killByPid([child.pid, ...groupMembers(groups)], 'SIGKILL');
      liveLabs.delete(child.pid);
    }
    await fsp.rm(lab, { recursive: true, force: true });
  }
}

/** `promise`'s value, or undefined after `ms`; the timer is cleared either way (a pending timer would keep the caller's process alive). */
async function raceTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<undefined>((resolve) => (timer = setTimeout(resolve, ms, undefined)))]);
  } finally {
    clearTimeout(timer);
  }
}

function consoleTail(text: string): string {
  // Drop UML's call-trace lines; keep the last messages.
  const lines = text.split('\n').filter((l) => !/^\s*\[<[0-9a-f]+>\]/.test(l));
  return '--- console (last lines) ---\n' + lines.slice(-40).join('\n');
}
