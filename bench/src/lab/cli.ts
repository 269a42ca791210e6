#!/usr/bin/env node
/**
 * `scripts/lab [options] -- CMD ARGS...`: run one command in the kernel lab (User-Mode Linux, see
 * uml.ts), print its stdout and stderr, exit with its exit status.
 *
 * Exit status: the command's own; 128+N if a signal N killed it (as a shell reports it); 124 on
 * timeout (as timeout(1)); 125 if the lab itself failed (unavailable, a module did not load, the
 * guest kernel died), as `docker run` and timeout(1) use 125 for their own failures.
 * Output is printed when the command has finished (it goes through files, not a pipe).
 */
import * as os from 'node:os';
import { DEFAULT_MODULES, labAvailable, labKernel, runInLab } from './uml.js';

const USAGE = `usage: scripts/lab [--timeout SEC] [--mem MB] [--modules LIST] [--share DIR]... [--verbose] -- CMD [ARGS...]

Runs CMD inside a User-Mode Linux kernel (with sch_plug etc.), host filesystem shared read-write,
fresh tmpfs on /run and /tmp, only a loopback network. Prints CMD's stdout/stderr, exits with its status
(124: timed out, 125: the lab failed).

  --timeout SEC   whole-run budget, boot included (default 120)
  --mem MB        guest memory (default 1024)
  --modules LIST  comma-separated kernel modules to load first, instead of the default set
                  (${DEFAULT_MODULES.join(',')}); '' loads none. Others still load on demand.
  --share DIR     make a host directory under /tmp or /run visible inside (repeatable; the cwd always is)
  --verbose       print the kernel used and the boot/total time on stderr
  --check         only say whether the lab is available (exit 0) or why not (exit 125)
`;

function fail(message: string, code = 125): never {
  process.stderr.write(`lab: ${message}\n`);
  process.exit(code);
}

async function main(argv: string[]): Promise<number> {
  let timeoutMs: number | undefined;
  let memMb: number | undefined;
  let modules: string[] | undefined;
  const share: string[] = [];
  let verbose = false;
  let i = 0;
  const value = (opt: string): string => {
    const v = argv[++i];
    if (v === undefined) fail(`${opt} needs a value\n${USAGE}`, 64);
    return v;
  };
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('-')) break; // the command itself, without a '--'
    switch (a) {
      case '--timeout': {
        const s = Number(value(a));
        if (!(s > 0)) fail(`--timeout wants a positive number of seconds`, 64);
        timeoutMs = Math.round(s * 1000);
        break;
      }
      case '--mem': {
        const m = Number(value(a));
        if (!Number.isInteger(m) || m < 64) fail(`--mem wants an integer number of MiB >= 64`, 64);
        memMb = m;
        break;
      }
      case '--modules':
        modules = value(a)
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean);
        break;
      case '--share':
        share.push(value(a));
        break;
      case '--verbose':
      case '-v':
        verbose = true;
        break;
      case '--check': {
        const avail = labAvailable();
        if (!avail.ok) fail(`unavailable: ${avail.reason}`);
        const k = labKernel();
        process.stdout.write(`lab: available: ${k.kernel} ${k.version} (${k.origin})${k.xstateShim ? ', with the xstate shim' : ''}\n`);
        return 0;
      }
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return 0;
      default:
        fail(`unknown option ${a}\n${USAGE}`, 64);
    }
  }
  const command = argv.slice(i);
  if (command.length === 0) fail(`no command given\n${USAGE}`, 64);

  const avail = labAvailable();
  if (!avail.ok) fail(`unavailable: ${avail.reason}`);
  let r;
  try {
    r = await runInLab({
      command,
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      ...(memMb !== undefined ? { memMb } : {}),
      ...(modules !== undefined ? { modules } : {}),
      ...(share.length ? { share } : {}),
    });
  } catch (e) {
    fail((e as Error).message);
  }
  process.stdout.write(r.stdout);
  process.stderr.write(r.stderr);
  if (verbose) {
    const k = labKernel();
    process.stderr.write(`lab: ${k.kernel} ${k.version}${k.xstateShim ? ' (xstate shim)' : ''}: boot ${r.bootMs} ms, total ${r.durationMs} ms\n`);
  }
  if (r.timedOut) {
    process.stderr.write(`lab: timed out after ${((timeoutMs ?? 120_000) / 1000).toFixed(1)} s; command killed\n`);
    return 124;
  }
  if (r.exitCode !== null) return r.exitCode;
  const signo = r.signal ? (os.constants.signals as Record<string, number>)[r.signal] : undefined;
  return 128 + (signo ?? 0);
}

// Ctrl-C and friends: exit through process.exit so that uml.ts's exit hook kills the UML (it runs
// in its own session and would otherwise live on until its deadline) and removes its directory.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    process.stderr.write(`lab: ${sig}, stopping the lab\n`);
    process.exit(128 + os.constants.signals[sig]);
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => fail(e instanceof Error ? (e.stack ?? e.message) : String(e)),
);
