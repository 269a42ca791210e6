/**
 * The base of every synhold error: a stable `code` (undici's habit) that callers
 * and the CLI's exit codes key on, and a message for people. The layers above
 * define one subclass per failure (src/netlink/errors.ts, ...).
 */
export class SynholdError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}
