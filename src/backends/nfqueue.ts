/**
 * The nfqueue backend, for kernels without sch_plug: an iptables rule in raw
 * PREROUTING sends new SYNs to the protected ports to an NFQUEUE with
 * --queue-bypass. While nobody has the queue bound (no hold), packets pass as if
 * the rule were not there. A hold binds the queue (in the holder process) and
 * keeps every packet's verdict; release accepts them all and unbinds.
 *
 * What it costs compared with plug:
 * - A held client's SYN retransmits reach the queue too (raw PREROUTING sees a
 *   copy, not the socket's own packet), one per second per client; all are
 *   released together and the listener treats the extras as retransmissions.
 * - The queue lives as long as its socket: the hold's watchdog keeps a
 *   duplicate, so when the owner dies the watchdog still accepts what is held.
 *   Only if both die does the kernel drop it: those clients retransmit (after
 *   ~1 s) and get through the bypass. Nothing is reset, but they pay a second.
 * - The hold path is in-process netlink (bind, verdict), but setup and teardown
 *   spawn iptables.
 */
import { SteeringGoneError, SynholdError } from '../model/errors.js';
import { describeMissing, ProgramMissingError } from '../host/programs.js';
import { encodeReleaseRequests, NfQueue } from '../nfqueue/nfnetlink_queue.js';
import { readKernelQueueStats } from '../nfqueue/proc.js';
import { detectIptables, Iptables, type IptablesBackend } from '../netfilter/iptables.js';
import { nfqueueRule, type IptablesRule } from '../netfilter/rules.js';
import type { SetupConfig } from '../model/config.js';
import { synMatches } from '../model/syn-match.js';
import { atomically, type BackendContext, type HoldBackend, type ProbeResult } from './backend.js';

/** Queue length while holding: room for ~3 SYNs (first + 1 s retransmits) from thousands of clients. */
export const NFQUEUE_MAXLEN = 16384;

export interface NfqueueState {
  queue: number;
  iptables: IptablesBackend;
  rules: IptablesRule[];
}

export const nfqueueBackend: HoldBackend<NfqueueState> = {
  name: 'nfqueue',
  cost: 'new connections wait for the hold; if the owner of the hold and its watchdog both die, held SYNs are dropped and those clients retransmit (~1 s later, then get through)',
  probe: probeNfqueue,

  async install(cfg, ctx) {
    const ipt4 = await detectIptables({ family: 4, need: 'nfqueue', netns: ctx.netns });
    const rules = synMatches(cfg).map((m) => nfqueueRule({ ...m, queue: cfg.queueNum }));
    return atomically(async (undo) => {
      for (const rule of rules) {
        const ipt = new Iptables({ backend: ipt4.backend, family: rule.family, netns: ctx.netns });
        const { added } = await ipt.ensure(rule, 'first');
        if (added) undo.push(`iptables rule ${rule.spec.join(' ')}`, async () => void (await ipt.remove(rule)));
      }
      return { queue: cfg.queueNum, iptables: ipt4.backend, rules };
    });
  },

  async uninstall(s, ctx) {
    for (const rule of s.rules) await new Iptables({ backend: s.iptables, family: rule.family, netns: ctx.netns }).remove(rule, { tidy: true });
  },

  async verify(s, ctx) {
    for (const rule of s.rules) {
      if (!(await new Iptables({ backend: s.iptables, family: rule.family, netns: ctx.netns }).has(rule)))
        return `the NFQUEUE rule for port ${rule.spec[rule.spec.indexOf('--dport') + 1]} is gone`;
    }
    return undefined;
  },

  async prepare(s, ctx) {
    // The rule is what brings SYNs to the queue: a flushed raw table means a hold would protect nothing.
    const gone = await presence(s, ctx.netns);
    if (gone) throw new SteeringGoneError(`${gone} (removed since setup): holding would protect nothing; run synhold setup again`);
    const before = (await readKernelQueueStats(ctx.netns).catch(() => [])).find((q) => q.queue === s.queue);
    const q = NfQueue.open({ queue: s.queue, maxLen: NFQUEUE_MAXLEN, copyRange: 0, netns: ctx.netns });
    // The watchdog shares this socket (a verdict must come from the socket that
    // bound the queue) and, if it has to, releases as acceptAll() + unbind() do.
    const messages = encodeReleaseRequests(s.queue, () => q.reserveSeq()).map((bytes) => ({ socket: 0, bytes }));
    return {
      fallback: { sockets: [q.fd], messages, commands: [], relayAcks: (l) => q.onReservedAck(l) },
      async start() {
        await q.bindQueue(true);
        return {
          async release() {
            // Let the held SYNs go first; then read the drop counters (before unbind, which removes the queue's line).
            const { accepted } = await q.acceptAll();
            const k = await q.kernelStats().catch(() => undefined);
            await q.unbind();
            const drops = (k?.queueDropped ?? 0) + (k?.userDropped ?? 0) - ((before?.queueDropped ?? 0) + (before?.userDropped ?? 0));
            return { released: accepted, drops: Math.max(0, drops) };
          },
        };
      },
      close() {
        q.close();
      },
    };
  },

  async forceRelease() {
    // A dead holder's queue is already gone: the kernel dropped what it held,
    // and --queue-bypass lets the clients' retransmits through. Nothing to undo.
  },

  async counters(s, ctx) {
    const k = (await readKernelQueueStats(ctx.netns).catch(() => [])).find((q) => q.queue === s.queue);
    return { heldPackets: k?.queueTotal ?? 0, drops: (k?.queueDropped ?? 0) + (k?.userDropped ?? 0) };
  },
};

/** Whether every rule is in place, checked the cheap way (Iptables.countTagged): undefined, or what is gone. */
async function presence(s: NfqueueState, netns: string | undefined): Promise<string | undefined> {
  const counts = await Promise.all(s.rules.map((r) => new Iptables({ backend: s.iptables, family: r.family, netns }).countTagged(r)));
  const i = counts.findIndex((c) => c === 0);
  return i < 0 ? undefined : `the NFQUEUE rule for port ${s.rules[i]!.spec[s.rules[i]!.spec.indexOf('--dport') + 1]} is gone`;
}

/** Can this kernel queue (nfnetlink_queue + the NFQUEUE target)? */
async function probeNfqueue(_cfg: SetupConfig, ctx: BackendContext): Promise<ProbeResult> {
  try {
    await detectIptables({ family: 4, need: 'nfqueue' });
  } catch (e) {
    if (e instanceof ProgramMissingError) return { ok: false, missing: describeMissing(e) };
    return { ok: false, missing: `the iptables NFQUEUE target (xt_NFQUEUE): ${(e as Error).message}` };
  }
  // Bind a scratch queue number, without holding, to prove nfnetlink_queue is there.
  try {
    const q = await NfQueue.bind({ queue: 65000 + (process.pid % 500), hold: false, netns: ctx.netns });
    await q.unbind();
    q.close();
  } catch (e) {
    if (e instanceof SynholdError) return { ok: false, missing: `nfnetlink_queue (CONFIG_NETFILTER_NETLINK_QUEUE): ${e.message}` };
    throw e;
  }
  return { ok: true };
}
