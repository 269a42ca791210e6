/**
 * The drop backend's switch (the seed's baseline, Willy Tarreau's method): while
 * holding, SYNs to the protected ports are dropped, and each client retransmits
 * its SYN after its retransmission timeout (1 s on Linux, then 2 s, 4 s...). It
 * costs those clients at least a second and exists for comparison and for kernels
 * with neither sch_plug nor NFQUEUE. Layout: see dropJumpRule() in rules.ts.
 *
 * Unlike the nfqueue backend, hold and release spawn iptables (a few ms each on
 * the host); next to the >= 1 s the method costs its clients that does not matter.
 */
import type { Iptables } from './iptables.js';
import type { SynMatch } from '../model/syn-match.js';
import { DEFAULT_DROP_CHAIN, dropJumpRule, dropRule, type IptablesRule } from './rules.js';

export class DropSwitch {
  readonly chain: string;
  private readonly jumps: IptablesRule[];
  private readonly drop: IptablesRule;

  constructor(
    readonly ipt: Iptables,
    matches: readonly SynMatch[],
    chain = DEFAULT_DROP_CHAIN,
  ) {
    this.chain = chain;
    this.jumps = matches.map((m) => dropJumpRule({ ...m, chain }));
    this.drop = dropRule({ family: ipt.family, chain });
  }

  /** Creates the chain and the jumps (idempotent). Does not hold. */
  async setup(): Promise<void> {
    await this.ipt.ensureChain('raw', this.chain);
    for (const j of this.jumps) await this.ipt.ensure(j, 'first');
  }

  /** Starts dropping. Equivalent to: `iptables -t raw -C synhold-drop ... || iptables -t raw -A synhold-drop -m comment --comment synhold:drop -j DROP`. */
  async hold(): Promise<void> {
    await this.ipt.ensure(this.drop, 'last');
  }

  /** Stops dropping. Equivalent to: `iptables -t raw -F synhold-drop`. */
  async release(): Promise<void> {
    if (await this.ipt.chainExists('raw', this.chain)) await this.ipt.flushChain('raw', this.chain);
  }

  /** release() as one argv that another process can run: `iptables -w 5 -t raw -F synhold-drop`. Flushing an absent chain fails harmlessly. */
  releaseCommand(): string[] {
    return this.ipt.commandLine(['-t', 'raw', '-F', this.chain]);
  }

  /** Whether SYNs are being dropped right now (the DROP rule is in the chain). */
  holding(): Promise<boolean> {
    return this.ipt.has(this.drop);
  }

  /** Releases, removes the jumps and the chain, and tidies the table (nft). */
  async teardown(): Promise<void> {
    await this.release();
    for (const j of this.jumps) await this.ipt.remove(j, { tidy: false });
    await this.ipt.deleteChain('raw', this.chain);
    await this.ipt.tidyTable('raw');
  }
}
