/**
 * Action lists as classifiers carry them (TCA_U32_ACT, TCA_FW_ACT): a nest of
 * entries numbered 1..N, each with TCA_ACT_KIND and the kind's TCA_ACT_OPTIONS
 * (include/uapi/linux/pkt_cls.h).
 */
import { UnknownKindError } from '../../model/errors.js';
import { defineAttributes } from '../../netlink/schema.js';
import { actMirred } from './act_mirred.js';
import { decodeOptionsOf, type TcKind } from './kind.js';

export const ACTION_KINDS: ReadonlyMap<string, TcKind<never>> = new Map<string, TcKind<never>>([actMirred].map((k) => [k.kind, k as TcKind<never>]));

/** TCA_ACT_* inside one entry of an action list */
export const tcaActAttrs = defineAttributes('tca_act', {
  kind: { type: 1, kind: 'string' },
  // iproute2 marks the kind-specific options as a nest; the kernel accepts either.
  options: { type: 2, kind: 'binary', nestedFlag: true },
  index: { type: 3, kind: 'u32' },
  stats: { type: 4, kind: 'binary' },
  pad: { type: 5, kind: 'binary' },
  cookie: { type: 6, kind: 'binary' },
  flags: { type: 7, kind: 'binary' },
  hwStats: { type: 8, kind: 'binary' },
  usedHwStats: { type: 9, kind: 'binary' },
  inHwCount: { type: 10, kind: 'u32' },
});

export interface ActionSpec {
  kind: string;
  options: unknown;
}

export interface ActionInfo {
  kind: string;
  options?: unknown;
}

/** Encodes entries 1..N (the outer attribute, TCA_*_ACT, is the caller's). */
export function encodeActionList(actions: readonly ActionSpec[]): { kind: string; options?: Buffer }[] {
  return actions.map((a) => {
    const k = ACTION_KINDS.get(a.kind);
    if (!k) throw new UnknownKindError(`synhold cannot encode action kind "${a.kind}"`);
    const options = k.encodeOptions(a.options as never);
    return options === undefined ? { kind: a.kind } : { kind: a.kind, options };
  });
}

export function decodeActionList(entries: readonly { kind?: string; options?: Buffer }[]): ActionInfo[] {
  return entries.map((e) => {
    const kind = e.kind ?? '';
    const info: ActionInfo = { kind };
    if (e.options) info.options = decodeOptionsOf(ACTION_KINDS, kind, e.options);
    return info;
  });
}
