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
 *
 * Steering `while-holding` (setup --steering): no iptables rule at all. The hold's
 * start adds an nf_tables table of synhold's own with the same match
 * (netfilter/hold-table.ts) right after binding the queue, and its release deletes
 * it after the verdicts and the unbind (prepareWhileHolding says why). Between holds no hook of synhold's is in any
 * packet's path (the raw PREROUTING hook cost ~5% of loopback request rate,
 * docs/STEADY-STATE.md). The table is owned by the hold's netlink socket, which
 * the watchdog shares: the kernel deletes it when both are gone, so it cannot
 * outlive the hold, and the watchdog's fallback deletes it after it accepts.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { SteeringGoneError, SynholdError } from '../model/errors.js';
import { describeMissing, ProgramMissingError } from '../host/programs.js';
import { encodeReleaseRequests, NfQueue } from '../nfqueue/nfnetlink_queue.js';
import { readKernelQueueStats, type KernelQueueStats } from '../nfqueue/proc.js';
import { detectIptables, Iptables, type IptablesBackend } from '../netfilter/iptables.js';
import { nfqueueRule, type IptablesRule } from '../netfilter/rules.js';
import type { SetupConfig, Steering } from '../model/config.js';
import { synMatches, type SynMatch } from '../model/syn-match.js';
import { NetlinkError } from '../netlink/errors.js';
import { NETLINK_NETFILTER, NetlinkSocket } from '../netlink/socket.js';
import {
  addHoldTableBatch,
  deleteHoldTableBatch,
  encodeDeleteHoldTableForWatchdog,
  holdFamilies,
  holdTableName,
  KEPT_TABLE_COMMENT,
  nftFamilyOf,
  type HoldFamily,
} from '../netfilter/hold-table.js';
import { getTable, NFT_TABLE_F_OWNER } from '../netfilter/nf_tables.js';
import { atomically, type BackendContext, type HoldBackend, type ProbeResult, type ReleaseResult } from './backend.js';

/** Queue length while holding: room for ~3 SYNs (first + 1 s retransmits) from thousands of clients. */
export const NFQUEUE_MAXLEN = 16384;

export interface NfqueueState {
  queue: number;
  iptables: IptablesBackend;
  /** The iptables rules of steering `always` (none for while-holding). */
  rules: IptablesRule[];
  /** The steering installed (never auto: setup resolves it). Absent in state written before the option existed: always. */
  steering?: Exclude<Steering, 'auto'>;
  /** With --steering auto: why setup chose this one. */
  steeringReason?: string;
  /** What the hold table matches (steering while-holding). */
  matches?: SynMatch[];
}

export const nfqueueBackend: HoldBackend<NfqueueState> = {
  name: 'nfqueue',
  cost: 'new connections wait for the hold; if the owner of the hold and its watchdog both die, held SYNs are dropped and those clients retransmit (~1 s later, then get through)',
  probe: probeNfqueue,

  async install(cfg, ctx) {
    if (cfg.steering === 'while-holding') {
      await proveHoldTable(cfg, ctx);
      return whileHoldingState(cfg);
    }
    if (cfg.steering === 'auto') {
      // While-holding wherever the kernel takes its table: no packet pays anything between holds.
      try {
        await proveHoldTable(cfg, ctx);
        return { ...whileHoldingState(cfg), steeringReason: 'this kernel takes the hold table: nothing in any packet path between holds' };
      } catch (e) {
        // A kernel without the pieces: the always-on rule. A table in the way, or no privilege: the same error as asked.
        if (!(e instanceof NetlinkError) || ![2, 93, 95].includes(e.errno)) throw e;
        return { ...(await installAlways(cfg, ctx)), steering: 'always', steeringReason: `this kernel refused the hold table (${e.message})` };
      }
    }
    return installAlways(cfg, ctx);
  },

  async uninstall(s, ctx) {
    if (s.steering === 'while-holding') {
      // A table an earlier hold kept (another NFQUEUE user was bound): teardown removes it.
      const sock = NetlinkSocket.open(NETLINK_NETFILTER, { netns: ctx.netns });
      try {
        await deleteKeptTables(sock, s.queue, s.matches ?? []);
      } finally {
        sock.close();
      }
    }
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
    if (s.steering === 'while-holding') return prepareWhileHolding(s, ctx.netns);
    // The rule is what brings SYNs to the queue: a flushed raw table means a hold would protect nothing.
    const gone = await presence(s, ctx.netns);
    if (gone) throw new SteeringGoneError(`${gone} (removed since setup): holding would protect nothing; run synhold setup again`);
    const { q, messages, releaseQueue } = await openHoldQueue(s.queue, ctx.netns);
    return {
      fallback: { sockets: [q.fd], messages, commands: [], relayAcks: (l) => q.onReservedAck(l) },
      async start() {
        await q.bindQueue(true);
        return { release: releaseQueue };
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

/** Steering always: the iptables rule per family, from setup to teardown. */
async function installAlways(cfg: SetupConfig, ctx: BackendContext): Promise<NfqueueState> {
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
}

/**
 * Steering while-holding installs nothing: this proves now, with the real tables, that this kernel
 * takes them (and that no table of their name is in the way), so the first hold cannot be the one
 * to find out. The chain has no hook here: registering one would send SYNs to queue N while it
 * exists (someone else may have N bound), and deleting one makes the kernel drop every packet
 * queued in the namespace (prepareWhileHolding).
 */
async function proveHoldTable(cfg: SetupConfig, ctx: BackendContext): Promise<void> {
  const matches = synMatches(cfg);
  const sock = NetlinkSocket.open(NETLINK_NETFILTER, { netns: ctx.netns });
  try {
    await holdTableOn(sock, cfg.queueNum, matches, { hook: false });
    await holdTableOff(sock, cfg.queueNum, matches);
  } finally {
    sock.close();
  }
}

function whileHoldingState(cfg: SetupConfig): NfqueueState {
  // `iptables` is unused without rules; 'nft' names the only tables there are.
  return { queue: cfg.queueNum, iptables: 'nft', rules: [], steering: 'while-holding', matches: synMatches(cfg) };
}

/**
 * How long a while-holding release waits, after its own verdicts and unbind, for the namespace's
 * other NFQUEUE queues to hold nothing before it deletes its tables: deleting a base chain makes the
 * kernel drop what every queue of the namespace holds (nf_queue_nf_hook_drop), and that would cut
 * another user's hold short. Held clients do not wait for this (their SYNs have their verdicts); the
 * hold's lock and protect's exit do. Past it the tables go anyway, and the release says how many
 * packets of others went with them (ReleaseResult.othersCut).
 */
export const OTHERS_IDLE_WAIT_MS = 1000;

/** Until the other queues hold nothing (OTHERS_IDLE_WAIT_MS at most): what they hold at the end (0 normally), and how long that took. */
async function waitOthersIdle(queue: number, netns: string | undefined): Promise<{ othersCut: number; othersWaitMs: number }> {
  const start = performance.now();
  for (;;) {
    // What the other queues hold now: what deleting a base chain would drop (a read that fails
    // says nothing of them: delete as before).
    const n = (await otherQueues(queue, netns).catch(() => [])).reduce((a, k) => a + k.queueTotal, 0);
    const waited = performance.now() - start;
    if (n === 0 || waited >= OTHERS_IDLE_WAIT_MS) return { othersCut: n, othersWaitMs: n === 0 && waited < 1 ? 0 : waited };
    await sleep(1);
  }
}

/**
 * The queue of one hold, for both steerings: its socket opened (not bound), the watchdog's release
 * requests on it (the watchdog shares this socket: a verdict must come from the socket that bound
 * the queue; it releases as releaseQueue does), and the owner's release: accept every held packet,
 * read the drop counters (before unbind, which removes the queue's line in /proc), unbind.
 */
async function openHoldQueue(queue: number, netns: string | undefined) {
  const before = (await readKernelQueueStats(netns).catch(() => [])).find((k) => k.queue === queue);
  const q = NfQueue.open({ queue, maxLen: NFQUEUE_MAXLEN, copyRange: 0, netns });
  const messages = encodeReleaseRequests(queue, () => q.reserveSeq()).map((bytes) => ({ socket: 0, bytes }));
  async function releaseQueue(): Promise<{ released: number; drops: number }> {
    const { accepted } = await q.acceptAll();
    const k = await q.kernelStats().catch(() => undefined);
    await q.unbind();
    const drops = (k?.queueDropped ?? 0) + (k?.userDropped ?? 0) - ((before?.queueDropped ?? 0) + (before?.userDropped ?? 0));
    return { released: accepted, drops: Math.max(0, drops) };
  }
  return { q, messages, releaseQueue };
}

const tableHint = (queue: number) => (e: NetlinkError) =>
  e.errno === 17
    ? `a table "${holdTableName(queue)}" that this hold did not make is in the way: find it with \`nft list tables\`, or set up with another --queue-num`
    : e.errno === 95
      ? 'this kernel lacks nf_tables table ownership (NFT_TABLE_F_OWNER, Linux 5.12): use --steering always'
      : e.errno === 1
        ? // The kernel answers EPERM, before EEXIST, for a table another socket owns.
          process.getuid?.() === 0
          ? `a table "${holdTableName(queue)}" owned by another process is in the way (a hold of another synhold, or another program): find it with \`nft list tables\`, or set up with another --queue-num`
          : 'nf_tables needs root (CAP_NET_ADMIN)'
        : e.errno === 2 || e.errno === 93
          ? 'this kernel lacks an nf_tables piece the steering needs (nf_tables, nft_compat with xt_NFQUEUE): use --steering always'
          : undefined;

/** Adds the hold table (one transaction; the socket owns it). Equivalent to: `nft -f` of the table in netfilter/hold-table.ts. */
async function holdTableOn(sock: NetlinkSocket, queue: number, matches: readonly SynMatch[], o: { hook?: boolean; owner?: boolean } = {}): Promise<void> {
  await sock.batch(addHoldTableBatch(queue, matches, o), { op: `nf_tables transaction (add tables ${holdTableName(queue)})`, hint: tableHint(queue) });
}

/**
 * Deletes them. Equivalent to: `nft delete table ip synhold-qN; nft delete table ip6 synhold-qN`, in
 * one transaction. A transaction is all or none: if one table is already gone (a watchdog deletes
 * each family in a transaction of its own, and may have died between the two), the kernel's ENOENT
 * would undo the other's delete too. Then each family goes in a transaction of its own, and ENOENT
 * there means that one is gone.
 */
async function holdTableOff(sock: NetlinkSocket, queue: number, matches: readonly SynMatch[]): Promise<void> {
  const families = holdFamilies(matches);
  try {
    await deleteHoldTables(sock, queue, families);
  } catch (e) {
    if (!tableGone(e) || families.length < 2) throw e;
    for (const f of families) {
      try {
        await deleteHoldTables(sock, queue, [f]);
      } catch (e2) {
        if (!tableGone(e2)) throw e2;
      }
    }
  }
}

/** The tables of `families`, in one transaction. */
function deleteHoldTables(sock: NetlinkSocket, queue: number, families: readonly HoldFamily[]): Promise<void> {
  return sock.batch(deleteHoldTableBatch(queue, families), { op: `nf_tables transaction (delete tables ${holdTableName(queue)})`, hint: tableHint(queue) });
}

/** ENOENT from a delete: the table is not there (already deleted). */
const tableGone = (e: unknown): boolean => e instanceof NetlinkError && e.errno === 2;

/**
 * A seam for one fault test (test/faults/hold-table-delete.test.ts): `deleteTables` runs the release's
 * delete of the tables, given as `del`; the default just calls it, a test's fails the first call. There
 * is no real fault to use instead: for the socket that owns the tables, the kernel's delete
 * (nf_tables_deltable, nft_flush_table) fails only for want of memory (EPERM is for other sockets,
 * ENOENT means already gone), and kernels built without CONFIG_FAULT_INJECTION and kprobes cannot be
 * made to fail an allocation on demand.
 */
export interface WhileHoldingOptions {
  /** `deleteOne` deletes one family's table alone (what a watchdog that died half-way leaves). */
  deleteTables?: (del: () => Promise<void>, deleteOne: (family: HoldFamily) => Promise<void>) => Promise<void>;
}

/**
 * A hold with steering while-holding. Order, and why:
 * - start: bind the queue, then add the table. The other way round, a SYN matched before the bind
 *   would pass by the bypass, unheld.
 * - release: accept (which first turns the queue fail-open with room for nothing, so a SYN that
 *   arrives after the verdicts passes), unbind, and only then delete the table. Deleting a base
 *   chain unregisters its hook, and the kernel then drops every packet queued in the namespace
 *   (nf_queue_nf_hook_drop): a table deleted first would drop the held SYNs (measured: the client
 *   connected only at its 1 s retransmit).
 * - other NFQUEUE users (an IPS, synhold buffer's nfqueue engine, another setup's queue): that same
 *   drop would take what they hold. So a hold that finds another queue bound in the namespace when
 *   it is prepared adds a table no socket owns and keeps it after its release (the always-on rule's
 *   cost, through nf_tables, for as long as they are there); the first release that finds synhold
 *   alone again deletes it. A hold that found nobody still waits, before its delete, for any queue
 *   bound since to hold nothing (OTHERS_IDLE_WAIT_MS at most; past it the release says what went).
 * - the watchdog: the same order, on duplicates of both sockets; it deletes an owned table only.
 */
export async function prepareWhileHolding(s: NfqueueState, netns: string | undefined, o: WhileHoldingOptions = {}) {
  const deleteTables = o.deleteTables ?? ((del) => del());
  const matches = s.matches ?? [];
  const { q, messages: queueMessages, releaseQueue } = await openHoldQueue(s.queue, netns);
  let nft: NetlinkSocket;
  let kept: HoldFamily[];
  let keep: boolean;
  try {
    nft = NetlinkSocket.open(NETLINK_NETFILTER, { netns });
  } catch (e) {
    q.close();
    throw e;
  }
  try {
    kept = await keptTables(nft, s.queue, matches);
    keep = kept.length > 0 || (await otherQueues(s.queue, netns)).length > 0;
  } catch (e) {
    q.close();
    nft.close();
    throw e;
  }
  const messages = [
    ...queueMessages,
    // A kept table outlives the hold by design: the watchdog only releases the queue (its rule's bypass lets SYNs pass).
    ...(keep ? [] : holdFamilies(matches).map((f) => ({ socket: 1, bytes: encodeDeleteHoldTableForWatchdog(s.queue, f, nft.reserveSeq()) }))),
  ];
  return {
    /** This hold keeps its table (another NFQUEUE user was bound when it was prepared). */
    keep,
    fallback: {
      sockets: [q.fd, nft.fd],
      messages,
      commands: [],
      relayAcks: (l: (seq: number, error: number) => void) => {
        q.onReservedAck(l);
        nft.onReservedAck(l);
      },
    },
    async start() {
      await q.bindQueue(true);
      try {
        if (!keep) await holdTableOn(nft, s.queue, matches);
        else {
          const missing = matches.filter((m) => !kept.includes(nftFamilyOf(m)));
          if (missing.length > 0) await holdTableOn(nft, s.queue, missing, { owner: false });
        }
      } catch (e) {
        await q.unbind().catch(() => undefined);
        throw e;
      }
      // A release that failed part-way resumes where it stopped when it is called again (the
      // session retries): once the queue is unbound only the tables' delete is left to do.
      let unbound: { released: number; drops: number } | undefined;
      return {
        async release(): Promise<ReleaseResult> {
          unbound ??= await releaseQueue();
          if (keep) {
            // Back to no cost between holds once synhold is the namespace's only NFQUEUE user again.
            // (a read that fails counts as someone there: the table stays)
            const others = await otherQueues(s.queue, netns).catch(() => undefined);
            if (others?.length === 0) await deleteKeptTables(nft, s.queue, matches);
            return unbound;
          }
          const { othersCut, othersWaitMs } = await waitOthersIdle(s.queue, netns);
          try {
            await deleteTables(
              () => holdTableOff(nft, s.queue, matches),
              (f) => deleteHoldTables(nft, s.queue, [f]),
            );
          } catch (e) {
            // ENOENT: already gone. Otherwise the table still goes with the socket, at close().
            if (!tableGone(e)) throw e;
          }
          return { ...unbound, ...(othersCut > 0 ? { othersCut } : {}), ...(othersWaitMs > 0 ? { othersWaitMs } : {}) };
        },
      };
    },
    close() {
      q.close();
      nft.close();
    },
  };
}

/** The queues bound in the namespace other than `queue` (/proc/net/netfilter/nfnetlink_queue). */
async function otherQueues(queue: number, netns: string | undefined): Promise<KernelQueueStats[]> {
  return (await readKernelQueueStats(netns)).filter((k) => k.queue !== queue);
}

/** The families whose hold table exists and is owned by no socket: kept by an earlier hold. Equivalent to: `nft list table ip synhold-qN` without `flags owner`. */
async function keptTables(sock: NetlinkSocket, queue: number, matches: readonly SynMatch[]): Promise<HoldFamily[]> {
  const out: HoldFamily[] = [];
  for (const f of holdFamilies(matches)) {
    const t = await getTable(sock, f, holdTableName(queue));
    // Ours by its comment: a table of that name someone else made is never taken for it (the hold's own add then refuses: EEXIST).
    if (t && (t.flags & NFT_TABLE_F_OWNER) === 0 && t.comment === KEPT_TABLE_COMMENT) out.push(f);
  }
  return out;
}

/** Deletes the kept tables there are (an owned one, a live hold's, is never touched). */
async function deleteKeptTables(sock: NetlinkSocket, queue: number, matches: readonly SynMatch[]): Promise<void> {
  for (const f of await keptTables(sock, queue, matches)) {
    try {
      await deleteHoldTables(sock, queue, [f]);
    } catch (e) {
      if (!tableGone(e)) throw e;
    }
  }
}

/** Whether every rule is in place, checked the cheap way (Iptables.countTagged): undefined, or what is gone. */
async function presence(s: NfqueueState, netns: string | undefined): Promise<string | undefined> {
  const counts = await Promise.all(s.rules.map((r) => new Iptables({ backend: s.iptables, family: r.family, netns }).countTagged(r)));
  const i = counts.findIndex((c) => c === 0);
  return i < 0 ? undefined : `the NFQUEUE rule for port ${s.rules[i]!.spec[s.rules[i]!.spec.indexOf('--dport') + 1]} is gone`;
}

/** Can this kernel queue (nfnetlink_queue + the NFQUEUE target)? */
async function probeNfqueue(cfg: SetupConfig, ctx: BackendContext): Promise<ProbeResult> {
  // Steering while-holding needs no iptables (install proves the nf_tables side with the real table),
  // nor does auto, which only falls back to the rule where the kernel refuses the table.
  if (cfg.steering === 'always') {
    try {
      await detectIptables({ family: 4, need: 'nfqueue' });
    } catch (e) {
      if (e instanceof ProgramMissingError) return { ok: false, missing: describeMissing(e) };
      return { ok: false, missing: `the iptables NFQUEUE target (xt_NFQUEUE): ${(e as Error).message}` };
    }
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
