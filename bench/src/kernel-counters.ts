// The kernel's own count of what went wrong on the path, per strategy: the
// /proc/net/netstat and /proc/net/snmp counters (what `nstat` prints) of the
// strategy's network namespace, read before and after its load. They are an
// oracle independent of the load generator: a SYN the listener dropped
// (ListenDrops), one the client sent again (TCPSynRetrans), a reset, a request
// socket moved to the new listener (TCPMigrateReqSuccess) or lost (...Failure).

import { readFileSync } from 'node:fs';

/**
 * The counters kept: the ones that say a SYN was dropped, sent again or answered with a reset, or
 * that a connection was moved. Others (segments, bytes) change with any load and say nothing of a
 * reload; so do TcpOutRsts, TcpEstabResets and TcpExtTCPAbortOnData here, which the seed's pair
 * moves once (twice) per request in the no-reload baseline (`synhold bench --quick`: 72,898
 * requests, TCPAbortOnData +72,898), so they are left out.
 */
export const WATCHED_COUNTERS = [
  'TcpExtListenOverflows',
  'TcpExtListenDrops',
  'TcpExtTCPReqQFullDrop',
  'TcpExtTCPReqQFullDoCookies',
  'TcpExtSyncookiesSent',
  'TcpExtSyncookiesFailed',
  'TcpExtTCPSynRetrans',
  'TcpExtTCPTimeouts',
  'TcpExtTCPMigrateReqSuccess',
  'TcpExtTCPMigrateReqFailure',
  'TcpExtEmbryonicRsts',
  'TcpExtPAWSActive',
  'TcpExtPAWSEstab',
  'TcpExtTCPChallengeACK',
  'TcpExtTCPSYNChallenge',
  'TcpExtTCPAbortOnClose',
  'TcpExtTCPBacklogDrop',
  'TcpExtTCPTimeWaitOverflow',
  'TcpExtTCPACKSkippedSynRecv',
  'TcpAttemptFails',
] as const;

/** Parses the two-line-per-group format of /proc/net/netstat and /proc/net/snmp ("TcpExt: A B" then "TcpExt: 1 2") into "TcpExtA" -> 1. */
export function parseProcCounters(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  const lines = text.split('\n');
  for (let i = 0; i + 1 < lines.length; i++) {
    const names = lines[i]!.trim().split(/\s+/);
    const values = lines[i + 1]!.trim().split(/\s+/);
    const group = names[0];
    if (!group?.endsWith(':') || values[0] !== group || /^-?\d+$/.test(names[1] ?? '')) continue;
    for (let k = 1; k < names.length && k < values.length; k++) {
      const v = Number(values[k]);
      if (Number.isFinite(v)) out[`${group.slice(0, -1)}${names[k]}`] = v;
    }
    i++;
  }
  return out;
}

/** The counters of this thread's network namespace (/proc/net follows the reader's), or of process `pid`'s. */
export function readCounters(pid?: number): Record<string, number> {
  const dir = pid === undefined ? '/proc/net' : `/proc/${pid}/net`;
  const read = (p: string) => {
    try {
      return readFileSync(p, 'utf8');
    } catch {
      return '';
    }
  };
  return { ...parseProcCounters(read(`${dir}/snmp`)), ...parseProcCounters(read(`${dir}/netstat`)) };
}

/** The watched counters that moved between two readings (a counter this kernel lacks is left out). */
export function counterDeltas(
  before: Record<string, number>,
  after: Record<string, number>,
  names: readonly string[] = WATCHED_COUNTERS,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of names) {
    if (before[n] === undefined || after[n] === undefined) continue;
    const d = after[n] - before[n];
    if (d !== 0) out[n] = d;
  }
  return out;
}
