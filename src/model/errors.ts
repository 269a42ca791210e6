/**
 * The base of every synhold error: a stable `code` (undici's habit) that callers
 * and the CLI's exit codes key on, and a message for people. The layers above
 * define one subclass per failure (src/netlink/errors.ts, ...).
 */
export class SynholdError extends Error {
  readonly code: string;
  /**
   * The kernel feature whose absence caused this failure, named as its module
   * (`sch_plug`, `nfnetlink_queue`, `xt_NFQUEUE`). The kernel layers state the
   * fact; the CLI, which knows the alternatives, turns it into advice.
   */
  readonly lacks?: KernelFeature;
  constructor(code: string, message: string, options?: { cause?: unknown; lacks?: KernelFeature }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    if (options?.lacks !== undefined) this.lacks = options.lacks;
  }
}

export type KernelFeature = 'sch_plug' | 'sch_prio' | 'ifb' | 'nfnetlink_queue' | 'xt_NFQUEUE';
