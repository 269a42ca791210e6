/**
 * A throwaway network namespace per test, and the independent oracles
 * (iproute2's `tc -j`, `ip -j`, `ss`, `nstat`) used to check what synhold did.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { stateDir } from '../../src/protect/state.js';
import { BufferPaths } from '../../src/buffer/paths.js';

export interface TestNetns {
  readonly name: string;
  readonly path: string;
  /** Runs a command inside the namespace; throws with its stderr on failure. */
  exec(cmd: string, args: string[]): string;
  /** `tc -n NS -j ARGS` parsed. */
  tcJson(args: string[]): unknown[];
  /** `ip -n NS -j ARGS` parsed. */
  ipJson(args: string[]): unknown[];
  delete(): void;
}

export function createNetns(prefix = 'synhold-t'): TestNetns {
  const name = `${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', name]);
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return {
    name,
    path: `/run/netns/${name}`,
    exec(cmd, args) {
      const r = spawnSync('ip', ['netns', 'exec', name, cmd, ...args], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} (in ${name}) failed with ${r.status}: ${r.stderr}`);
      return r.stdout;
    },
    tcJson(args) {
      const out = execFileSync('tc', ['-n', name, '-j', ...args], { encoding: 'utf8' });
      return out.trim() ? (JSON.parse(out) as unknown[]) : [];
    },
    ipJson(args) {
      const out = execFileSync('ip', ['-n', name, '-j', ...args], { encoding: 'utf8' });
      return out.trim() ? (JSON.parse(out) as unknown[]) : [];
    },
    delete() {
      // synhold's state directories for this namespace (protect's, and a buffer's beside it: its lock
      // files stay after a buffer ends, by design) are keyed by the namespace's cookie, which is never
      // reused: left behind, every test would leave one more under /run/synhold.
      let dirs: string[] = [];
      try {
        dirs = [stateDir(name), BufferPaths.for(name, 0).dir];
      } catch {
        // no such namespace any more, or no addon: nothing to find
      }
      spawnSync('ip', ['netns', 'delete', name]);
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    },
  };
}

/** Runs fn with a fresh namespace and always deletes it. */
export async function withNetns<T>(fn: (ns: TestNetns) => Promise<T>): Promise<T> {
  const ns = createNetns();
  try {
    return await fn(ns);
  } finally {
    ns.delete();
  }
}

/** What this kernel can do, probed once with tc itself (not with synhold's code). */
export function kernelHas(kind: 'plug' | 'prio' | 'ifb'): boolean {
  const ns = createNetns('synhold-probe');
  try {
    const cmd =
      kind === 'ifb'
        ? ['ip', ['-n', ns.name, 'link', 'add', 'probe0', 'type', 'ifb']]
        : ['tc', ['-n', ns.name, 'qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', kind]];
    return spawnSync(cmd[0] as string, cmd[1] as string[]).status === 0;
  } finally {
    ns.delete();
  }
}

/** A counter from `nstat -az` in the namespace (e.g. TcpRetransSegs, TcpExtTCPMigrateReqSuccess), absolute. */
export function nstat(ns: TestNetns, name: string): number {
  const out = ns.exec('nstat', ['-az', '--json']);
  const j = JSON.parse(out) as { kernel: Record<string, number> };
  return j.kernel[name] ?? 0;
}
