/**
 * setup, teardown and status: install the steering once, remove exactly what
 * was installed, and report what is going on.
 */
import { backendFor, chooseBackend } from '../backends/index.js';
import type { BackendContext, HoldCounters } from '../backends/backend.js';
import type { NfqueueState } from '../backends/nfqueue.js';
import type { BuiltTopology, PlugState } from '../backends/plug.js';
import { BusyError } from '../model/errors.js';
import { Rtnl } from '../rtnl/rtnl.js';
import type { BackendName, SetupConfig } from '../model/config.js';
import { FileLock } from './lock.js';
import { enableMigrateReq, migrateReq, restoreMigrateReq } from './sysctl.js';
import { StateStore, type HoldRecord, type SetupRecord, type StatsRecord } from './state.js';
import { releaseHere } from './hold/recover.js';
import { isAlive, isStopped } from './hold/process-id.js';

/** How long setup waits for a live hold to end before refusing to change the steering under it. */
const SETUP_HOLD_WAIT_MS = 5000;
/** How long teardown waits for a live hold's processes after asking its watchdog to release. */
const TEARDOWN_RELEASE_WAIT_MS = 3000;
/** How many holds teardown ends, one after another, before it gives up (exit 4). */
const TEARDOWN_ATTEMPTS = 5;

export interface Scope {
  netns?: string;
}

function openCtx(scope: Scope): BackendContext {
  return scope.netns ? { rt: Rtnl.open({ netns: scope.netns }), netns: scope.netns } : { rt: Rtnl.open() };
}

async function withSetupLock<T>(store: StateStore, fn: () => Promise<T>): Promise<T> {
  store.ensure();
  const lock = await FileLock.acquire(store.setupLockPath, 10_000);
  if (!lock) throw new BusyError('another synhold setup or teardown is running');
  try {
    return await fn();
  } finally {
    // A failed first setup leaves no trace, not even the lock file's directory. Removed only
    // under the hold lock: a lock file removed under its holder would let a second process lock
    // the next one (two holds at once).
    removeIfUnused(store);
    lock.release();
  }
}

/** Removes the state directory if nothing is set up or held there, taking the hold lock to do it. */
function removeIfUnused(store: StateStore): void {
  if (store.readSetup() || store.readHold()) return;
  let hold: FileLock | undefined;
  try {
    hold = FileLock.tryAcquire(store.holdLockPath);
  } catch {
    return; // the directory is gone already
  }
  if (!hold) return; // someone holds it: not ours to remove
  try {
    if (!store.readSetup() && !store.readHold()) store.removeAll();
  } finally {
    hold.release();
  }
}

function sameConfig(a: SetupConfig, b: SetupConfig): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export interface SetupResult {
  changed: boolean;
  action: 'created' | 'unchanged' | 'updated';
  backend: BackendName;
  backendReason: string;
  record: SetupRecord;
}

/**
 * Installs the steering for `cfg`. Idempotent (the same config twice changes
 * nothing), updating (another config replaces the old one), atomic (a failure
 * leaves the system as it was).
 * CLI equivalent: `synhold setup --port P [--address A] [--source A] [--dev DEV] [--direction D] [--limit BYTES] [--backend B]`.
 */
export async function setup(cfg: SetupConfig, scope: Scope = {}): Promise<SetupResult> {
  const store = StateStore.for(scope.netns);
  return withSetupLock(store, async () => {
    const ctx = openCtx(scope);
    let holdLock: FileLock | undefined;
    try {
      const existing = store.readSetup();
      if (existing) {
        const backend = backendFor(existing.backend);
        const wanted = cfg.backend === 'auto' || cfg.backend === existing.backend;
        const broken = await backend.verify(existing.backendState, ctx);
        if (wanted && !broken && sameConfig({ ...existing.config, backend: cfg.backend }, cfg)) {
          return { changed: false, action: 'unchanged', backend: existing.backend, backendReason: existing.backendReason, record: existing };
        }
        // Never change the steering under a live hold: wait for it, bounded, then refuse.
        holdLock = await FileLock.acquire(store.holdLockPath, SETUP_HOLD_WAIT_MS);
        if (!holdLock) {
          const h = store.readHold();
          throw new BusyError(`a hold is in progress${h ? ` (${h.via} pid ${h.owner.pid})` : ''}; setup cannot change the steering now`);
        }
        // Another config: remove the old steering, then install the new one; if the
        // new one fails, put the old one back (between the two, SYNs flow unheld,
        // which is what no synhold means).
        await backend.uninstall(existing.backendState, ctx);
        try {
          return await install(cfg, existing);
        } catch (e) {
          const restored = await backend.install(existing.config, ctx).then(
            (st) => {
              if (existing.config.migrateReq) enableMigrateReq(scope.netns);
              store.writeSetup({ ...existing, backendState: st });
              return 'the previous steering is back in place';
            },
            (e2: unknown) => {
              store.removeSetup();
              return `restoring the previous steering failed too (${(e2 as Error).message}); nothing is set up`;
            },
          );
          if (e instanceof Error) e.message += `; ${restored}`;
          throw e;
        }
      }
      return await install(cfg, undefined);
    } finally {
      holdLock?.release();
      ctx.rt.close();
    }

    async function install(cfg: SetupConfig, existing: SetupRecord | undefined): Promise<SetupResult> {
      if (existing?.previousMigrateReq !== undefined) restoreMigrateReq(existing.previousMigrateReq, scope.netns);
      const { backend: name, reason } = await chooseBackend(cfg, ctx);
      const backend = backendFor(name);
      const backendState = await backend.install(cfg, ctx);
      const record: SetupRecord = {
        version: 1,
        config: cfg,
        backend: name,
        backendReason: reason,
        backendState,
        createdAt: new Date().toISOString(),
      };
      try {
        const previous = cfg.migrateReq ? enableMigrateReq(scope.netns) : undefined;
        if (previous !== undefined) record.previousMigrateReq = previous;
        store.writeSetup(record);
      } catch (e) {
        await backend.uninstall(backendState, ctx).catch(() => undefined);
        if (record.previousMigrateReq !== undefined) restoreMigrateReq(record.previousMigrateReq, scope.netns);
        throw e;
      }
      return { changed: true, action: existing ? 'updated' : 'created', backend: name, backendReason: reason, record };
    }
  });
}

export interface TeardownResult {
  removed: boolean;
  backend?: BackendName;
}

/** Removes everything setup created (releasing any hold first). CLI equivalent: `synhold teardown`. */
export async function teardown(scope: Scope = {}): Promise<TeardownResult> {
  const store = StateStore.for(scope.netns);
  return withSetupLock(store, async () => {
    const existing = store.readSetup();
    if (!existing) return { removed: false };
    // End any hold first (through its watchdog), and keep the hold lock so none starts meanwhile.
    // Another hold may take the lock the moment the first lets go (a protect waiting for it):
    // end that one too. Never remove the steering without the lock: under a live hold, that
    // would leave its queue bound with nothing steering to it and no lock to say so.
    let lock: FileLock | undefined;
    for (let i = 0; i < TEARDOWN_ATTEMPTS && !lock; i++) {
      ({ lock } = await releaseHere(store, existing, scope.netns, { waitMs: TEARDOWN_RELEASE_WAIT_MS, keepLock: true }));
    }
    if (!lock) throw new BusyError(`holds kept starting; teardown did not get the hold lock in ${TEARDOWN_ATTEMPTS} attempts and changed nothing`);
    const ctx = openCtx(scope);
    try {
      await backendFor(existing.backend).uninstall(existing.backendState, ctx);
    } finally {
      ctx.rt.close();
    }
    if (existing.previousMigrateReq !== undefined) restoreMigrateReq(existing.previousMigrateReq, scope.netns);
    store.removeAll();
    lock.release();
    return { removed: true, backend: existing.backend };
  });
}

/** The steering as installed (setup resolves --steering auto), and why when auto chose it: nfqueue's, and the plug's on a redirect topology. */
export interface SteeringReport {
  installed: 'always' | 'while-holding';
  reason?: string;
}

/** What a setup record steers with (nfqueue, and plug's redirect topologies; undefined for the others). */
export function steeringOf(record: SetupRecord): SteeringReport | undefined {
  if (record.backend === 'plug') {
    const p = record.backendState as PlugState;
    // The prio topology: its filters are under lo's root from setup to teardown, by design.
    if (p.direction === 'egress' && p.topology !== 'clsact') return undefined;
    return { installed: p.steering ?? 'always', ...(p.steeringReason ? { reason: p.steeringReason } : {}) };
  }
  if (record.backend !== 'nfqueue') return undefined;
  const s = record.backendState as NfqueueState;
  return { installed: s.steering ?? 'always', ...(s.steeringReason ? { reason: s.steeringReason } : {}) };
}

/** The plug backend's egress topology as built (setup resolves --egress-topology auto), and why when auto chose it. */
export interface TopologyReport {
  installed: BuiltTopology;
  reason?: string;
}

/** What a plug setup record's egress steering is built as (undefined for ingress and the other backends). */
export function topologyOf(record: SetupRecord): TopologyReport | undefined {
  if (record.backend !== 'plug') return undefined;
  const p = record.backendState as PlugState;
  if (p.direction !== 'egress') return undefined;
  // Records made before clsact existed carry no topology: theirs was prio.
  return { installed: p.topology ?? 'prio', ...(p.topologyReason ? { reason: p.topologyReason } : {}) };
}

export interface StatusReport {
  setUp: boolean;
  netns?: string;
  backend?: BackendName;
  backendReason?: string;
  /** nfqueue, and plug's redirect topologies: the steering installed. */
  steering?: SteeringReport;
  /** plug, egress: the topology built. */
  topology?: TopologyReport;
  cost?: string;
  config?: SetupConfig;
  problem?: string;
  held: boolean;
  hold?: HoldRecord & { heldForMs: number; ownerAlive: boolean; watchdogAlive: boolean; watchdogStopped: boolean };
  counters?: HoldCounters;
  stats: StatsRecord;
  /** net.ipv4.tcp_migrate_req now, when this kernel has it. */
  migrateReq?: string;
}

/**
 * Whether synhold is set up here, with which backend and why, whether a hold is
 * on (and whose), the kernel's counters and the last hold. Changes nothing.
 * CLI equivalent: `synhold status [--json]`.
 */
export async function status(scope: Scope = {}): Promise<StatusReport> {
  const store = StateStore.for(scope.netns);
  const existing = store.readSetup();
  const stats = store.readStats();
  const report: StatusReport = { setUp: Boolean(existing), held: false, stats };
  if (scope.netns) report.netns = scope.netns;
  if (!existing) return report;
  const backend = backendFor(existing.backend);
  report.backend = existing.backend;
  report.backendReason = existing.backendReason;
  const steering = steeringOf(existing);
  if (steering) report.steering = steering;
  const topology = topologyOf(existing);
  if (topology) report.topology = topology;
  report.cost = backend.cost;
  report.config = existing.config;
  const mr = migrateReq(scope.netns);
  if (mr !== undefined) report.migrateReq = mr;
  const hold = store.readHold();
  // The lock, not the record, says whether someone holds: it is kept by the hold's processes and dies with them.
  const locked = FileLock.isHeld(store.holdLockPath);
  if (hold) {
    const watchdogAlive = isAlive(hold.watchdog);
    report.held = locked;
    report.hold = { ...hold, heldForMs: Date.now() - hold.since, ownerAlive: isAlive(hold.owner), watchdogAlive, watchdogStopped: isStopped(hold.watchdog) };
    if (!locked)
      report.problem = `a hold record left by processes that are gone (${hold.via} pid ${hold.owner.pid}); run \`synhold release\` to make sure nothing is held`;
    else if (report.hold.watchdogStopped) report.problem = `the hold's watchdog (pid ${hold.watchdog.pid}) is stopped`;
  } else if (locked) {
    report.held = true; // a hold starting or ending right now
  }
  const ctx = openCtx(scope);
  try {
    const broken = await backend.verify(existing.backendState, ctx);
    if (broken) report.problem = `${broken}; run \`synhold setup\` again to repair`;
    report.counters = await backend.counters(existing.backendState, ctx).catch(() => undefined);
    // A record whose processes are gone, and packets in the hold: the kernel is still holding
    // (a plug outlives its owner and watchdog; sch_plug cannot say it is plugged, its queue can).
    if (!report.held && report.hold && (report.counters?.heldPackets ?? 0) > 0) report.held = true;
  } finally {
    ctx.rt.close();
  }
  return report;
}
