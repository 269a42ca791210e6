/**
 * The drop backend: the seed's baseline (Willy Tarreau's method). While holding,
 * SYNs to the protected ports are dropped; each client retransmits its SYN after
 * its retransmission timeout (1 s on Linux) and gets in then. Nothing is refused
 * or reset, but every connection made during a hold pays a second or more. It
 * exists for comparison, and for kernels with neither sch_plug nor NFQUEUE.
 * Layout (src/netfilter/drop.ts): a chain of our own in the raw table, jumped to
 * at setup; hold appends a DROP, release flushes the chain.
 */
import { SteeringGoneError } from '../model/errors.js';
import { detectIptables, Iptables, type IptablesBackend } from '../netfilter/iptables.js';
import { DropSwitch } from '../netfilter/drop.js';
import { describeMissing, ProgramMissingError } from '../host/programs.js';
import type { IpFamily } from '../model/prefix.js';
import { synMatches, type SynMatch } from '../model/syn-match.js';
import { atomically, type HoldBackend, type ProbeResult } from './backend.js';

export interface DropState {
  iptables: IptablesBackend;
  matches: SynMatch[];
}

function switches(s: DropState, netns?: string): DropSwitch[] {
  const families: IpFamily[] = [...new Set(s.matches.map((m) => m.family))];
  return families.map(
    (f) =>
      new DropSwitch(
        new Iptables({ backend: s.iptables, family: f, netns }),
        s.matches.filter((m) => m.family === f),
      ),
  );
}

export const dropBackend: HoldBackend<DropState> = {
  name: 'drop',
  cost: 'every connection made during a hold is dropped once and pays a SYN retransmit (1 s or more); nothing is refused',
  probe: probeDrop,

  async install(cfg, ctx) {
    const ipt = await detectIptables({ family: 4, need: 'drop', netns: ctx.netns });
    const state: DropState = { iptables: ipt.backend, matches: synMatches(cfg) };
    return atomically(async (undo) => {
      for (const sw of switches(state, ctx.netns)) {
        undo.push(`drop chain (IPv${sw.ipt.family})`, () => sw.teardown());
        await sw.setup();
      }
      return state;
    });
  },

  async uninstall(s, ctx) {
    for (const sw of switches(s, ctx.netns)) await sw.teardown();
  },

  async verify(s, ctx) {
    for (const sw of switches(s, ctx.netns)) {
      if (!(await sw.ipt.chainExists('raw', sw.chain))) return `the ${sw.chain} chain (IPv${sw.ipt.family}) is gone`;
    }
    return undefined;
  },

  async prepare(s, ctx) {
    const gone = await this.verify(s, ctx);
    if (gone) throw new SteeringGoneError(`${gone} (removed since setup): holding would protect nothing; run synhold setup again`);
    const sws = switches(s, ctx.netns);
    return {
      fallback: { sockets: [], messages: [], commands: sws.map((sw) => sw.releaseCommand()) },
      async start() {
        for (const sw of sws) await sw.hold();
        return {
          async release() {
            for (const sw of sws) await sw.release();
            // The dropped SYNs are not held anywhere: nothing is "released"; clients retransmit.
            return { released: 0, drops: 0 };
          },
        };
      },
      close() {
        // Nothing open: iptables runs as a process per step.
      },
    };
  },

  async forceRelease(s, ctx) {
    for (const sw of switches(s, ctx.netns)) await sw.release();
  },

  async counters() {
    return { heldPackets: 0, drops: 0 };
  },
};

/** `--backend auto`'s last resort: can iptables drop SYNs here? */
async function probeDrop(): Promise<ProbeResult> {
  try {
    await detectIptables({ family: 4, need: 'drop' });
    return { ok: true };
  } catch (e) {
    if (e instanceof ProgramMissingError) return { ok: false, missing: describeMissing(e) };
    return { ok: false, missing: `a working iptables (raw table): ${(e as Error).message}` };
  }
}
