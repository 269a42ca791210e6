/**
 * The iptables rules synhold installs, as data: table, chain and the rule
 * specification (everything after the chain name), identified by a comment
 * that starts with `synhold:`. Builders only; src/netfilter/iptables.ts runs them.
 *
 * Where the rules go: the raw table's PREROUTING chain. It sees every packet that
 * arrives on an interface, loopback included: a locally generated SYN to
 * 127.0.0.1 crosses raw OUTPUT on its way out, then re-enters through `lo` and
 * crosses raw PREROUTING (the kernel reports hook NF_INET_PRE_ROUTING for it;
 * test/kernel/nfqueue.test.ts checks this). So PREROUTING alone covers local and
 * remote clients, and each SYN is matched exactly once. raw is the first table
 * (priority -300, before conntrack), so a held SYN has no conntrack entry yet.
 */
import { SynholdError } from '../model/errors.js';
import { formatPrefix, prefixFamily, type IpFamily, type Prefix } from '../model/prefix.js';
import type { SynMatch } from '../model/syn-match.js';

export interface IptablesRule {
  family: IpFamily;
  table: string;
  chain: string;
  /** The rule specification after the chain name, as for `iptables -t TABLE -A CHAIN SPEC...`. */
  spec: readonly string[];
}

export const RULE_TAG_PREFIX = 'synhold:';
export const DEFAULT_DROP_CHAIN = 'synhold-drop';

/** An iptables rule specification synhold cannot build or parse. */
export class RuleSpecError extends SynholdError {
  constructor(detail: string) {
    super('ERR_IPTABLES_RULE', `iptables rule: ${detail}`);
  }
}

/** The rule's family, once every address in the match is checked to belong to it. */
function familyOf(m: SynMatch): IpFamily {
  const addrs = [m.dst, m.src].filter((p): p is Prefix => p !== undefined);
  if (addrs.some((p) => prefixFamily(p) !== m.family)) {
    throw new RuleSpecError(`addresses ${addrs.map(formatPrefix).join(', ')} do not all belong to IPv${m.family}`);
  }
  return m.family;
}

function checkPort(p: number): void {
  if (!Number.isInteger(p) || p < 1 || p > 65535) throw new RuleSpecError(`port ${String(p)} is not in 1..65535`);
}

/** Comments are how synhold finds its rules again: `synhold:` + no spaces or quotes (iptables -S would quote them). */
export function checkTag(tag: string): string {
  if (!tag.startsWith(RULE_TAG_PREFIX) || !/^[A-Za-z0-9:._\-/[\]]+$/.test(tag) || tag.length > 255) {
    throw new RuleSpecError(`comment "${tag}" must start with "${RULE_TAG_PREFIX}" and hold only [A-Za-z0-9:._-/[]] (at most 255 characters)`);
  }
  return tag;
}

function synSpec(m: SynMatch): string[] {
  checkPort(m.port);
  return [
    '-p',
    'tcp',
    ...(m.src !== undefined ? ['-s', formatPrefix(m.src)] : []),
    ...(m.dst !== undefined ? ['-d', formatPrefix(m.dst)] : []),
    // --syn: SYN set, ACK, RST and FIN clear - a connection's first packet only.
    '--syn',
    '--dport',
    String(m.port),
  ];
}

/**
 * SYNs to the port go to netfilter queue `queue`.
 * Equivalent to: `iptables -t raw -I PREROUTING -p tcp [-s SRC] [-d DST] --syn --dport P
 *   -m comment --comment synhold:nfqueue:N:P -j NFQUEUE --queue-num N --queue-bypass`.
 *
 * --queue-bypass: when no process has the queue bound, packets go on as if the
 * rule were not there (no hold, no drop). Without it they would be dropped. It
 * does not help packets already queued when the holder dies: those are dropped.
 */
export function nfqueueRule(m: SynMatch & { queue: number; bypass?: boolean; tag?: string }): IptablesRule {
  if (!Number.isInteger(m.queue) || m.queue < 0 || m.queue > 65535) throw new RuleSpecError(`queue ${String(m.queue)} is not in 0..65535`);
  const tag = checkTag(m.tag ?? `${RULE_TAG_PREFIX}nfqueue:${m.queue}:${m.port}`);
  return {
    family: familyOf(m),
    table: 'raw',
    chain: 'PREROUTING',
    spec: [
      ...synSpec(m),
      '-m',
      'comment',
      '--comment',
      tag,
      '-j',
      'NFQUEUE',
      '--queue-num',
      String(m.queue),
      ...(m.bypass === false ? [] : ['--queue-bypass']),
    ],
  };
}

/**
 * The drop backend (the seed's baseline) uses a chain of its own, in the raw table:
 * - at setup, one jump per protected port: SYNs to it go through `chain`
 *   (`-I PREROUTING -p tcp --syn --dport P -m comment --comment synhold:drop:P -j synhold-drop`);
 * - hold appends one `-j DROP` to the chain, release flushes it (`-F synhold-drop`).
 * Why a chain rather than inserting and deleting a DROP rule in PREROUTING: the
 * jump's position among other rules is settled once, at setup; hold and release
 * touch nothing but our own chain; and release is a flush, which cannot miss (no
 * rule spec to match) and is safe to repeat, e.g. after a crash while holding.
 */
export function dropJumpRule(m: SynMatch & { chain?: string; tag?: string }): IptablesRule {
  const chain = m.chain ?? DEFAULT_DROP_CHAIN;
  const tag = checkTag(m.tag ?? `${RULE_TAG_PREFIX}drop:${m.port}`);
  return {
    family: familyOf(m),
    table: 'raw',
    chain: 'PREROUTING',
    spec: [...synSpec(m), '-m', 'comment', '--comment', tag, '-j', chain],
  };
}

/** The rule hold puts in the drop chain: `iptables -t raw -A synhold-drop -m comment --comment synhold:drop -j DROP`. */
export function dropRule(opts: { family?: IpFamily; chain?: string } = {}): IptablesRule {
  return {
    family: opts.family ?? 4,
    table: 'raw',
    chain: opts.chain ?? DEFAULT_DROP_CHAIN,
    spec: ['-m', 'comment', '--comment', `${RULE_TAG_PREFIX}drop`, '-j', 'DROP'],
  };
}

/** The rule as iptables-save prints it would be matched: `-t raw -A PREROUTING ...`, for messages. */
export function formatRule(r: IptablesRule, verb = '-A'): string {
  return [`-t ${r.table}`, verb, r.chain, ...r.spec].join(' ');
}
