/**
 * tc handles: 32-bit major:minor numbers written in hex, as tc(8) prints them.
 * (include/uapi/linux/pkt_sched.h: TC_H_MAJ, TC_H_MIN, TC_H_ROOT, TC_H_INGRESS)
 */
import { BadHandleError } from '../../model/errors.js';

export const TC_H_UNSPEC = 0;
export const TC_H_ROOT = 0xffffffff;
export const TC_H_INGRESS = 0xfffffff1;
/** clsact shares ingress's parent; its two hooks are minor numbers of ffff:. */
export const TC_H_CLSACT = TC_H_INGRESS;
export const TC_H_MIN_INGRESS = 0xfff2;
export const TC_H_MIN_EGRESS = 0xfff3;

export function makeHandle(major: number, minor: number): number {
  return (((major & 0xffff) << 16) | (minor & 0xffff)) >>> 0;
}

export function handleMajor(h: number): number {
  return (h >>> 16) & 0xffff;
}

export function handleMinor(h: number): number {
  return h & 0xffff;
}

/** Parses `1:`, `1:4`, `ffff:fff2`, `root`, `ingress`, `none`. */
export function parseHandle(s: string): number {
  if (s === 'root') return TC_H_ROOT;
  if (s === 'ingress') return TC_H_INGRESS;
  if (s === 'none' || s === '0') return TC_H_UNSPEC;
  const m = /^([0-9a-f]{0,4}):([0-9a-f]{0,4})$/i.exec(s);
  if (!m) throw new BadHandleError(`"${s}" is not a tc handle (expected MAJOR:MINOR in hex, e.g. 1: or 1:4)`);
  return makeHandle(parseInt(m[1] || '0', 16), parseInt(m[2] || '0', 16));
}

/** Formats as tc does: `root`, `ingress`, `1:`, `1:4`. */
export function formatHandle(h: number): string {
  if (h === TC_H_ROOT) return 'root';
  if (h === TC_H_INGRESS) return 'ingress';
  if (h === TC_H_UNSPEC) return 'none';
  const min = handleMinor(h);
  return `${handleMajor(h).toString(16)}:${min ? min.toString(16) : ''}`;
}
