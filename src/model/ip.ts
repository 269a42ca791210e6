/**
 * IPv4 and IPv6 address syntax, as node:net's isIPv4/isIPv6 accept it, without
 * loading node:net: protect validates its configuration on every reload, and
 * that module (sockets, streams, DNS) was its costliest built-in to load where
 * loading is slow (tens of ms in the kernel lab). test/unit/ip.test.ts holds
 * these to node:net's answers.
 */

const V4_OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]\\d|\\d)';
const V4 = `${V4_OCTET}(?:\\.${V4_OCTET}){3}`;
const V4_RE = new RegExp(`^${V4}$`);
const V6_GROUP = '[0-9a-fA-F]{1,4}';

export function isIPv4(s: string): boolean {
  return V4_RE.test(s);
}

/** Eight groups, or fewer with one `::`; the last two may be an IPv4 address; an optional `%zone`. */
export function isIPv6(s: string): boolean {
  const pct = s.indexOf('%');
  if (pct === 0 || pct === s.length - 1) return false;
  const addr = pct > 0 ? s.slice(0, pct) : s;
  let groups = 8;
  let body = addr;
  const lastColon = addr.lastIndexOf(':');
  if (lastColon >= 0 && addr.includes('.', lastColon)) {
    if (!V4_RE.test(addr.slice(lastColon + 1))) return false;
    body = `${addr.slice(0, lastColon + 1)}0`;
    groups = 7;
  }
  const halves = body.split('::');
  if (halves.length > 2) return false;
  const parts = (h: string) => (h === '' ? [] : h.split(':'));
  const group = new RegExp(`^${V6_GROUP}$`);
  const all = halves.flatMap(parts);
  if (!all.every((g) => group.test(g))) return false;
  // body had the IPv4 part replaced by one group: count it as two.
  const count = all.length + (groups === 7 ? 1 : 0);
  return halves.length === 2 ? count <= 7 : count === 8;
}
