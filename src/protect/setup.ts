/**
 * setup, teardown and status: install the steering once, remove exactly what
 * was installed, and report what is going on.
 */
import { backendFor, chooseBackend } from '../backends/index.js';
import type { BackendContext, HoldCounters } from '../backends/backend.js';
import { SynholdError } from '../model/errors.js';
import { Rtnl } from '../rtnl/rtnl.js';
import type { BackendName, SetupConfig } from '../model/config.js';
import { FileLock } from './lock.js';
import { releaseViaDaemon } from './daemon-client.js';
import { enableMigrateReq, migrateReq, restoreMigrateReq } from './sysctl.js';
import { pidAlive, StateStore, type HoldRecord, type SetupRecord, type StatsRecord } from './state.js';

export interface Scope {
  netns?: string;
}

function openCtx(scope: Scope): BackendContext {
  return scope.netns ? { rt: Rtnl.open({ netns: scope.netns }), netns: scope.netns } : { rt: Rtnl.open() };
}

async function withSetupLock<T>(store: StateStore, fn: () => Promise<T>): Promise<T> {
  store.ensure();
  const lock = await FileLock.acquire(store.setupLockPath, 10_000);
  if (!lock) throw new SynholdError('ERR_BUSY', 'another synhold setup or teardown is running');
  try {
    return await fn();
  } finally {
    // A failed first setup leaves no trace, not even the lock file's directory.
    if (!store.readSetup() && !store.readHold()) store.removeAll();
    lock.release();
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
 */
export async function setup(cfg: SetupConfig, scope: Scope = {}): Promise<SetupResult> {
  const store = StateStore.for(scope.netns);
  return withSetupLock(store, async () => {
    const ctx = openCtx(scope);
    try {
      const existing = store.readSetup();
      if (existing) {
        const backend = backendFor(existing.backend);
        const wanted = cfg.backend === 'auto' || cfg.backend === existing.backend;
        const broken = await backend.verify(existing.backendState, ctx);
        if (wanted && !broken && sameConfig({ ...existing.config, backend: cfg.backend }, cfg)) {
          return { changed: false, action: 'unchanged', backend: existing.backend, backendReason: existing.backendReason, record: existing };
        }
        const hold = store.readHold();
        if (hold && pidAlive(hold.holderPid)) {
          throw new SynholdError('ERR_BUSY', `a hold is in progress (holder pid ${hold.holderPid}); setup cannot change the steering now`);
        }
        // Another config: remove the old steering, then install the new one.
        // (Between the two, SYNs flow unheld, which is what no synhold means.)
        await backend.uninstall(existing.backendState, ctx);
        if (existing.previousMigrateReq !== undefined) restoreMigrateReq(existing.previousMigrateReq, scope.netns);
        store.removeSetup();
      }
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
    } finally {
      ctx.rt.close();
    }
  });
}

export interface TeardownResult {
  removed: boolean;
  backend?: BackendName;
}

/** Removes everything setup created (releasing any hold first). */
export async function teardown(scope: Scope = {}): Promise<TeardownResult> {
  const store = StateStore.for(scope.netns);
  return withSetupLock(store, async () => {
    const existing = store.readSetup();
    if (!existing) return { removed: false };
    const hold = store.readHold();
    if (hold?.via === 'daemon' && pidAlive(hold.holderPid)) {
      await releaseViaDaemon(scope.netns, 'teardown');
    } else if (hold && pidAlive(hold.holderPid)) {
      // Let the holder release and record it; it exits on SIGTERM.
      process.kill(hold.holderPid, 'SIGTERM');
      const until = Date.now() + 2000;
      while (pidAlive(hold.holderPid) && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    }
    const ctx = openCtx(scope);
    try {
      await backendFor(existing.backend).uninstall(existing.backendState, ctx);
    } finally {
      ctx.rt.close();
    }
    if (existing.previousMigrateReq !== undefined) restoreMigrateReq(existing.previousMigrateReq, scope.netns);
    store.removeAll();
    return { removed: true, backend: existing.backend };
  });
}

export interface StatusReport {
  setUp: boolean;
  netns?: string;
  backend?: BackendName;
  backendReason?: string;
  cost?: string;
  config?: SetupConfig;
  problem?: string;
  held: boolean;
  hold?: HoldRecord & { heldForMs: number; holderAlive: boolean };
  counters?: HoldCounters;
  stats: StatsRecord;
  /** net.ipv4.tcp_migrate_req now, when this kernel has it. */
  migrateReq?: string;
}

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
  report.cost = backend.cost;
  report.config = existing.config;
  const mr = migrateReq(scope.netns);
  if (mr !== undefined) report.migrateReq = mr;
  const hold = store.readHold();
  if (hold) {
    const holderAlive = pidAlive(hold.holderPid);
    report.held = holderAlive;
    report.hold = { ...hold, heldForMs: Date.now() - hold.since, holderAlive };
    if (!holderAlive) report.problem = `hold record left by dead holder pid ${hold.holderPid}; run \`synhold release\` to make sure nothing is held`;
  }
  const ctx = openCtx(scope);
  try {
    const broken = await backend.verify(existing.backendState, ctx);
    if (broken) report.problem = `${broken}; run \`synhold setup\` again to repair`;
    report.counters = await backend.counters(existing.backendState, ctx).catch(() => undefined);
  } finally {
    ctx.rt.close();
  }
  return report;
}
