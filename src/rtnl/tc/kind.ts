/**
 * What a qdisc, classifier or action module provides: its kernel name and how
 * its TCA_OPTIONS (or TCA_ACT_OPTIONS) payload is encoded and decoded.
 */
export interface TcKind<Options> {
  /** The kernel's name: `plug`, `u32`, `mirred`. */
  readonly kind: string;
  /** TCA_OPTIONS payload, or undefined to send none. */
  encodeOptions(options: Options): Buffer | undefined;
  decodeOptions(payload: Buffer): unknown;
}

/** Decodes TCA_OPTIONS with the kind's module; kinds synhold does not model keep their bytes, as hex. */
export function decodeOptionsOf(kinds: ReadonlyMap<string, TcKind<never>>, kind: string, payload: Buffer): unknown {
  const k = kinds.get(kind);
  return k ? k.decodeOptions(payload) : { raw: payload.toString('hex') };
}
