// The strategies that are synhold itself: `synhold setup --port 16000
// --backend B --migrate-req off` once, then every reload runs as `synhold protect
// --report FILE -- haproxy ... -sf OLDPIDS`, as the README tells a user to, plus
// --report: each protect appends its --json result to FILE as one line (hold
// length, SYNs released and dropped, why it released, and the reload's timeline:
// when the new listener appeared, the last old one closed, the release was sent).
// The bench reads that file after the run; it never parses synhold's state files
// or its human summary line.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { migrateReq } from '../../../src/protect/sysctl.js';

/** protect's --max-hold in the kernel lab (see prepare()). */
export const LAB_MAX_HOLD = '30s';
import { stats } from '../reloader.js';
import { describeFailure, exec } from '../exec.js';
import { StrategyUnavailable, type HoldSummary, type Strategy, type StrategyName } from './strategy.js';

export interface ParsedHold {
  ms: number;
  released: number;
  dropped: number;
  reason: string;
  /** From the last old listener's close to the release being sent (both seen by protect's polls). */
  swapToReleaseMs?: number;
  /** --stop-old: the drain before the signal, and what it left on its way into the old listeners. */
  drain?: { ms: number; queued: number; handshaking: number };
  /** When the hold began, epoch ms (protect's holdStartedAt). */
  startedAt?: number;
}

/** The fields of protect's --json result the bench reads (see ProtectResult in src/protect/protect.ts). */
interface ProtectReportLine {
  holdStartedAt?: string;
  holdMs?: number;
  released?: number;
  drops?: number;
  releaseReason?: string;
  timeline?: { newListenerMs?: number; oldGoneMs?: number; releaseSentMs: number };
  stopOld?: { drainMs?: number; queuedAtSignal?: number; handshakingAtSignal?: number };
}

/** Every line of a --report file (protect's --json result, one per run); a line that is not JSON is skipped. */
export function parseProtectReports(jsonl: string): ParsedHold[] {
  const out: ParsedHold[] = [];
  for (const line of jsonl.split('\n')) {
    if (!line.trim()) continue;
    let r: ProtectReportLine;
    try {
      r = JSON.parse(line) as ProtectReportLine;
    } catch {
      continue;
    }
    if (typeof r.holdMs !== 'number') continue;
    const t = r.timeline;
    const startedAt = r.holdStartedAt === undefined ? NaN : Date.parse(r.holdStartedAt);
    out.push({
      ms: r.holdMs,
      released: r.released ?? 0,
      dropped: r.drops ?? 0,
      reason: r.releaseReason ?? '',
      ...(t?.oldGoneMs !== undefined ? { swapToReleaseMs: t.releaseSentMs - t.oldGoneMs } : {}),
      ...(r.stopOld?.drainMs !== undefined
        ? { drain: { ms: r.stopOld.drainMs, queued: r.stopOld.queuedAtSignal ?? 0, handshaking: r.stopOld.handshakingAtSignal ?? 0 } }
        : {}),
      ...(Number.isFinite(startedAt) ? { startedAt } : {}),
    });
  }
  return out;
}

/** A hold's release reason without what differs from one reload to the next
 * (socket ids, and with --stop-old the old process's pid), so that reasons can be counted. */
export function reasonKind(reason: string): string {
  return reason
    .replace(/ sk:[0-9a-f]+/g, '')
    .replace(/ pid [\d,]+/g, ' pid N')
    .trim();
}

export function holdSummary(holds: ParsedHold[], source: string): HoldSummary {
  const reasons: Record<string, number> = {};
  for (const h of holds) reasons[reasonKind(h.reason)] = (reasons[reasonKind(h.reason)] ?? 0) + 1;
  const gaps = holds.flatMap((h) => (h.swapToReleaseMs !== undefined ? [h.swapToReleaseMs] : []));
  const drains = holds.flatMap((h) => (h.drain ? [h.drain] : []));
  return {
    ms: stats(holds.map((h) => h.ms)),
    ...(gaps.length > 0 ? { swapToReleaseMs: stats(gaps) } : {}),
    ...(drains.length > 0
      ? {
          drain: {
            ms: stats(drains.map((d) => d.ms)),
            signalledWithQueued: drains.filter((d) => d.queued > 0).length,
            signalledWithHandshakes: drains.filter((d) => d.handshaking > 0).length,
            leftAtSignal: drains.reduce((a, d) => a + d.queued + d.handshaking, 0),
          },
        }
      : {}),
    source,
    released: holds.reduce((a, h) => a + h.released, 0),
    dropped: holds.reduce((a, h) => a + h.dropped, 0),
    reasons,
    reasonByReload: holds.map((h) => reasonKind(h.reason)),
    ...(holds.length > 0 && holds.every((h) => h.startedAt !== undefined)
      ? { windows: holds.map((h) => ({ startedAt: h.startedAt!, endedAt: h.startedAt! + h.ms })) }
      : {}),
  };
}

type Backend = 'plug' | 'nfqueue' | 'drop';

interface SynholdVariant {
  backend: Backend;
  kernelNeeds?: ['sch_plug'];
  defaultIntervalMs?: number;
  /** protect's --release-on (undefined: its default, the socket rule) */
  releaseOn?: 'exit';
  /** protect's --priority (undefined: its default, real-time while holding) */
  priority?: 'normal';
  /** protect's --stop-old: HAProxy reloaded without -sf, protect stops the old process itself */
  stopOld?: 'USR1';
  /** protect's --start-guard with --stop-old (undefined: its default, on) */
  startGuard?: 'off';
}

/** The reload without `-sf PIDS` (HAProxy's reload argv ends with it): the new process starts beside the old one. */
export function withoutSf(argv: readonly string[]): string[] {
  const sf = argv.indexOf('-sf');
  return sf < 0 ? [...argv] : argv.slice(0, sf);
}

function synholdStrategy(name: StrategyName, summary: string, variant: SynholdVariant): Strategy {
  const { backend, ...extra } = variant;
  return {
    name,
    summary,
    haproxyMode: 'sf',
    reloads: true,
    kernelNeeds: extra.kernelNeeds ?? [],
    ...(extra.defaultIntervalMs !== undefined ? { defaultIntervalMs: extra.defaultIntervalMs } : {}),
    prepare: async (ctx) => {
      // `synhold setup` also turns net.ipv4.tcp_migrate_req on by default, which
      // on its own prevents the resets (that is the migrate-req row). Off here,
      // so that this row measures the hold alone.
      const argv = [...ctx.synhold, '--json', 'setup', '--port', String(ctx.port), '--backend', backend, '--migrate-req', 'off'];
      const r = await exec(argv, { env: ctx.env, timeoutMs: 30_000 });
      const shown = `synhold setup --port ${ctx.port} --backend ${backend} --migrate-req off`;
      if (r.code !== 0) {
        throw new StrategyUnavailable(
          `\`${shown}\` failed (exit ${r.code ?? r.signal ?? r.error}): ${r.stderr.trim().split('\n').slice(-2).join(' | ') || describeFailure(r)}`,
        );
      }
      let chosen = '?';
      let reason = '';
      try {
        const j = JSON.parse(r.stdout) as { backend?: string; backendReason?: string };
        chosen = j.backend ?? '?';
        reason = j.backendReason ?? '';
      } catch {
        /* checked below */
      }
      if (chosen !== backend) {
        await exec([...ctx.synhold, 'teardown'], { env: ctx.env, timeoutMs: 30_000 });
        throw new StrategyUnavailable(`\`${shown}\` set up backend ${chosen}, not ${backend}: ${r.stdout.trim().slice(0, 300)}`);
      }
      ctx.log(`synhold set up: backend ${chosen} (${reason})`);
      // Check the sysctl itself (its /proc file), not what setup said it did.
      if (migrateReq() === '1') {
        await exec([...ctx.synhold, 'teardown'], { env: ctx.env, timeoutMs: 30_000 });
        throw new Error(`net.ipv4.tcp_migrate_req is 1 after \`${shown}\`: this row would not measure the hold alone`);
      }
      // In the kernel lab (one slow CPU) a protected reload takes seconds (3-9 s on CI's
      // EPYC): the default --max-hold 5s would end holds mid-reload and measure the
      // lab, not the hold. The host keeps protect's defaults.
      const protectArgs = [
        ...(ctx.where === 'lab' ? ['--max-hold', LAB_MAX_HOLD] : []),
        ...(extra.releaseOn ? ['--release-on', extra.releaseOn] : []),
        ...(extra.priority ? ['--priority', extra.priority] : []),
        ...(extra.stopOld ? ['--stop-old', extra.stopOld] : []),
        ...(extra.startGuard ? ['--start-guard', extra.startGuard] : []),
      ];
      const reloadOf = (reload: string[]) => (extra.stopOld ? withoutSf(reload) : reload);
      const report = join(ctx.haproxy.dir, 'protect.jsonl');
      return {
        wrap: { argv: (reload) => [...ctx.synhold, 'protect', ...protectArgs, '--report', report, '--', ...reloadOf(reload)] },
        holds: () => {
          const lines = existsSync(report) ? readFileSync(report, 'utf8') : '';
          const h = holdSummary(parseProtectReports(lines), "synhold protect --report (hold start to release; the reload's timeline)");
          if (backend === 'drop') {
            // Dropped SYNs are not counted by the drop backend (its summary always says
            // "0 SYNs released, 0 dropped"): no counts rather than misleading zeros.
            delete h.released;
            delete h.dropped;
            h.source += '; the drop backend does not count the SYNs it drops';
          }
          return h;
        },
        cleanup: async () => {
          const t = await exec([...ctx.synhold, 'teardown'], { env: ctx.env, timeoutMs: 30_000 });
          if (t.code !== 0) throw new Error(describeFailure(t));
        },
        notes: [
          `${shown}; reload: synhold protect ${protectArgs.map((a) => `${a} `).join('')}--report FILE -- haproxy ...${extra.stopOld ? ' (no -sf)' : ' -sf OLDPIDS'}`,
        ],
      };
    },
  };
}

export const plug = synholdStrategy(
  'plug',
  "synhold's plug backend (sch_plug on lo, in-process netlink) alone (--migrate-req off): `synhold protect -- haproxy -sf`, released at the socket swap",
  { backend: 'plug', kernelNeeds: ['sch_plug'] },
);
export const plugExit = synholdStrategy(
  'plug-exit',
  'the plug backend with the conservative hold: `synhold protect --release-on exit -- haproxy -sf`, released when the reload command exits',
  { backend: 'plug', kernelNeeds: ['sch_plug'], releaseOn: 'exit' },
);
export const nfqueue = synholdStrategy(
  'nfqueue',
  "synhold's NFQUEUE backend (kernels without sch_plug) alone (--migrate-req off): `synhold protect -- haproxy -sf`, released at the socket swap",
  { backend: 'nfqueue' },
);
export const nfqueueExit = synholdStrategy(
  'nfqueue-exit',
  'the NFQUEUE backend with the conservative hold: `synhold protect --release-on exit -- haproxy -sf`, released when the reload command exits',
  { backend: 'nfqueue', releaseOn: 'exit' },
);
export const nfqueueNormal = synholdStrategy(
  'nfqueue-normal',
  "`nfqueue` with protect's loop at normal priority (`synhold protect --priority normal -- haproxy -sf`): beside `nfqueue` (real-time while holding, the default), what the priority does to the release",
  { backend: 'nfqueue', priority: 'normal' },
);
export const plugStopOld = synholdStrategy(
  'plug-stop-old',
  "the plug backend holding only around the old process's stop: `synhold protect --stop-old USR1 -- haproxy` (no -sf: protect sends the soft stop itself once the new process listens)",
  { backend: 'plug', kernelNeeds: ['sch_plug'], stopOld: 'USR1' },
);
export const nfqueueStopOld = synholdStrategy(
  'nfqueue-stop-old',
  "the NFQUEUE backend holding only around the old process's stop: `synhold protect --stop-old USR1 -- haproxy` (no -sf: protect sends the soft stop itself once the new process listens)",
  { backend: 'nfqueue', stopOld: 'USR1' },
);
export const nfqueueStopOldUnguarded = synholdStrategy(
  'nfqueue-stop-old-unguarded',
  '`nfqueue-stop-old` without its start guard (`synhold protect --stop-old USR1 --start-guard off -- haproxy`): the new listener gets its hashed share of connections while the new process starts, and the old one is stopped as soon as the new one listens; beside `nfqueue-stop-old`, what the guard does to the tail',
  { backend: 'nfqueue', stopOld: 'USR1', startGuard: 'off' },
);
// The seed could only reload every second with dropped SYNs ("exponentially
// backing off connections" otherwise); that is its default interval here too.
export const drop = synholdStrategy('drop', "synhold's drop backend (drop SYNs during the reload; clients retransmit after 1 s)", {
  backend: 'drop',
  defaultIntervalMs: 1000,
});
