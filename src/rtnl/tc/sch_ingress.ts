/**
 * ingress and clsact (net/sched/sch_ingress.c): not queues but attachment
 * points for filters. clsact gives both hooks: parent ffff:fff2 (ingress) and
 * ffff:fff3 (egress). Neither takes options.
 */
import type { TcKind } from './kind.js';

export const schIngress: TcKind<Record<string, never>> = {
  kind: 'ingress',
  encodeOptions: () => undefined,
  decodeOptions: (payload) => ({ raw: payload.toString('hex') }),
};

export const schClsact: TcKind<Record<string, never>> = {
  kind: 'clsact',
  encodeOptions: () => undefined,
  decodeOptions: (payload) => ({ raw: payload.toString('hex') }),
};
