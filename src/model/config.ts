/**
 * What `synhold setup` is asked to protect, validated before anything touches
 * the kernel, so bad input changes nothing.
 */
import { ConfigError } from './errors.js';
import { parsePrefix, prefixFamily, type Prefix } from './prefix.js';

export type BackendName = 'plug' | 'nfqueue' | 'drop';
export type BackendChoice = BackendName | 'auto';
export type Direction = 'egress' | 'ingress';
/**
 * How the plug backend steers egress SYNs (backends/plug.ts): `prio`, the seed's
 * (a prio root on the device, the plug in one of its bands), or `clsact` (the
 * device's root untouched; an egress filter redirects matching SYNs to a plug on
 * an IFB device, as the ingress path does). `auto` (the default) is clsact, with
 * its filters only while holding unless --steering always, so that between holds the
 * device has the qdiscs it had before setup; it falls back to prio when the device has
 * an `ingress` qdisc (which has no egress hook) or the kernel cannot redirect (no
 * clsact or no act_mirred). Setup records which it built, and why.
 */
export type EgressTopology = 'auto' | 'prio' | 'clsact';
export const EGRESS_TOPOLOGIES: readonly EgressTopology[] = ['auto', 'prio', 'clsact'];
/**
 * When the steering is in the packet path. nfqueue (backends/nfqueue.ts): `always`, an iptables
 * rule in raw PREROUTING from setup to teardown, or `while-holding`, an nf_tables table of
 * synhold's own that exists only during a hold (netfilter/hold-table.ts), so between holds synhold
 * costs no packet anything; `auto` (the default) is while-holding unless setup finds another
 * NFQUEUE user bound in the namespace, or a kernel that refuses the table: then always. plug
 * (backends/plug.ts), redirect topologies (egress clsact, ingress): `while-holding` (what `auto`
 * picks) adds the two redirect filters to the hook at each hold's start and deletes them after its
 * release, `always` keeps them from setup to teardown; the prio topology is `always` (its root is its
 * cost). Setup records which it chose, and why.
 */
export type Steering = 'auto' | 'always' | 'while-holding';
export const STEERINGS: readonly Steering[] = ['auto', 'always', 'while-holding'];

export interface SetupConfig {
  ports: number[];
  /** Only SYNs to these destinations (default: any local address). */
  addresses: Prefix[];
  /** Only SYNs from these sources (the seed's link-local mode; default: any). */
  sources: Prefix[];
  dev: string;
  direction: Direction;
  /** The plug backend's egress steering (ignored by the other backends and by ingress). */
  egressTopology: EgressTopology;
  /** The nfqueue backend's steering, and the plug backend's on its redirect topologies (ignored by drop). */
  steering: Steering;
  /** Plug byte limit / NFQUEUE length. */
  limit: number;
  queueNum: number;
  backend: BackendChoice;
  /** Also turn on net.ipv4.tcp_migrate_req (see sysctl.ts); default true. */
  migrateReq: boolean;
}

export { ConfigError };

export const DEFAULT_QUEUE_NUM = 7001;

/** Default plug limit (bytes): room for ~200 held SYNs of ~80 bytes... times 100, so bursts during a reload are not dropped. */
export const DEFAULT_PLUG_LIMIT = 1024 * 1024;

export function parsePort(s: string | number): number {
  const n = typeof s === 'number' ? s : /^\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new ConfigError(`port "${s}" is not in 1..65535`);
  return n;
}

export function parseAddress(s: string): Prefix {
  try {
    return parsePrefix(s);
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
}

/**
 * A byte count: `65536`, `64k`, `1m` (units of 1024). CLI equivalent: how `synhold setup --limit BYTES` reads BYTES.
 */
export function parseSize(s: string): number {
  const m = /^(\d+)\s*(k|kb|kib|m|mb|mib|b)?$/i.exec(s.trim());
  if (!m) throw new ConfigError(`"${s}" is not a size (e.g. 65536, 64k, 1m)`);
  const unit = (m[2] ?? 'b').toLowerCase();
  const n = Number(m[1]) * (unit.startsWith('k') ? 1024 : unit.startsWith('m') ? 1024 * 1024 : 1);
  if (n < 1 || n > 0xffffffff) throw new ConfigError(`size ${s} is out of range`);
  return n;
}

/**
 * The documented maximum of each duration option, in ms. Past them a hold would
 * outlive any reload worth protecting, and setTimeout (which fires at once for
 * anything over 2^31-1 ms) would turn a huge --max-hold into an instant release.
 */
export const MAX_DURATION_MS = {
  maxHold: 10 * 60_000,
  lockWait: 10 * 60_000,
  timeout: 24 * 3_600_000,
  settleWait: 10 * 60_000,
  poll: 1000,
} as const;

/**
 * `250ms`, `2s`, `1.5s`, `1m`, or a bare number of seconds (as timeout(1)), in ms.
 * CLI equivalent: how `synhold protect --max-hold D` (and every other duration option) reads D.
 */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s.trim());
  if (!m) throw new ConfigError(`"${s}" is not a duration (e.g. 500ms, 2s, 1m)`);
  const v = Number(m[1]);
  const ms = m[2] === 'ms' ? v : m[2] === 'm' ? v * 60_000 : v * 1000;
  if (!Number.isFinite(ms) || ms <= 0) throw new ConfigError(`duration ${s} must be positive`);
  return Math.round(ms);
}

export function validateDevice(dev: string): string {
  if (!dev || Buffer.byteLength(dev) > 15 || /[\s/:]/.test(dev)) throw new ConfigError(`"${dev}" is not a valid interface name`);
  return dev;
}

/**
 * A complete, validated SetupConfig from the fields given (the rest defaulted):
 * throws ConfigError (code ERR_BAD_INPUT) on bad input, before anything touches the kernel.
 * CLI equivalent: what `synhold setup` does with its flags before it acts (bad input: exit 2).
 */
export function normalizeConfig(c: Partial<SetupConfig> & { ports: number[] }): SetupConfig {
  if (c.ports.length === 0) throw new ConfigError('at least one --port is needed');
  const ports = [...new Set(c.ports.map(parsePort))].sort((a, b) => a - b);
  const direction = c.direction ?? 'egress';
  if (direction !== 'egress' && direction !== 'ingress') throw new ConfigError(`--direction must be egress or ingress, not "${String(direction)}"`);
  const egressTopology = c.egressTopology ?? 'auto';
  if (!EGRESS_TOPOLOGIES.includes(egressTopology)) {
    throw new ConfigError(
      `--egress-topology must be ${EGRESS_TOPOLOGIES.slice(0, -1).join(', ')} or ${EGRESS_TOPOLOGIES.at(-1)!}, not "${String(egressTopology)}"`,
    );
  }
  if (c.egressTopology !== undefined && direction === 'ingress') {
    throw new ConfigError('--egress-topology applies to --direction egress only (ingress always redirects to an IFB device)');
  }
  const backend = c.backend ?? 'auto';
  if (!['auto', 'plug', 'nfqueue', 'drop'].includes(backend)) throw new ConfigError(`--backend must be auto, plug, nfqueue or drop, not "${backend}"`);
  const steering = c.steering ?? 'auto';
  if (!STEERINGS.includes(steering))
    throw new ConfigError(`--steering must be ${STEERINGS.slice(0, -1).join(', ')} or ${STEERINGS.at(-1)!}, not "${String(steering)}"`);
  if (c.steering !== undefined && backend === 'drop') {
    throw new ConfigError('--steering applies to the nfqueue and plug backends (the drop backend steers with its own iptables chain)');
  }
  if (steering === 'while-holding' && backend === 'plug' && direction === 'egress' && egressTopology === 'prio') {
    throw new ConfigError(
      "--steering while-holding needs the plug backend's redirect topology (--egress-topology clsact, or --direction ingress): the prio topology's cost is lo's root qdisc, which stays between holds whatever its filters do",
    );
  }
  const queueNum = c.queueNum ?? DEFAULT_QUEUE_NUM;
  if (!Number.isInteger(queueNum) || queueNum < 0 || queueNum > 65535) throw new ConfigError(`queue number ${queueNum} is not in 0..65535`);
  const dev = validateDevice(c.dev ?? 'lo');
  if (direction === 'ingress' && dev === 'lo') {
    throw new ConfigError('--direction ingress needs a real interface (on lo, new connections are egress traffic: use the default)');
  }
  const addresses = c.addresses ?? [];
  const sources = c.sources ?? [];
  const families = (ps: Prefix[]) => new Set(ps.map(prefixFamily));
  if (addresses.length && sources.length) {
    const a = families(addresses);
    const s = families(sources);
    if (![...a].some((f) => s.has(f))) throw new ConfigError('--address and --source name different IP families: nothing could match');
  }
  return {
    ports,
    addresses,
    sources,
    dev,
    direction,
    egressTopology,
    steering,
    limit: c.limit ?? DEFAULT_PLUG_LIMIT,
    queueNum,
    backend,
    migrateReq: c.migrateReq ?? true,
  };
}
