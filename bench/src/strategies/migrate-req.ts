// `migrate-req`: the kernel's fix (Linux 5.14+). With net.ipv4.tcp_migrate_req=1
// a closing SO_REUSEPORT listener hands its queued SYNs and unaccepted
// children to another listener of the same group instead of resetting them.
// The sysctl is per network namespace, so setting it here touches only the
// bench's namespace. Reloads are the plain -sf ones.

import { migrateReq as readMigrateReq } from '../../../src/protect/sysctl.js';
import { describeFailure, exec } from '../exec.js';
import { StrategyUnavailable, type Strategy } from './strategy.js';

export const migrateReq: Strategy = {
  name: 'migrate-req',
  summary: 'plain `haproxy -sf` with `sysctl net.ipv4.tcp_migrate_req=1` (Linux >= 5.14)',
  haproxyMode: 'sf',
  reloads: true,
  kernelNeeds: [],
  prepare: async (ctx) => {
    const r = await exec(['sysctl', '-w', 'net.ipv4.tcp_migrate_req=1'], { env: ctx.env, timeoutMs: 10_000 });
    if (r.code !== 0) {
      throw new StrategyUnavailable(`this kernel has no net.ipv4.tcp_migrate_req (Linux >= 5.14): ${describeFailure(r)}`);
    }
    // Oracle independent of sysctl's own answer: the proc file.
    const now = readMigrateReq();
    if (now !== '1') throw new StrategyUnavailable(`/proc/sys/net/ipv4/tcp_migrate_req reads ${now ?? 'nothing'} after sysctl -w ...=1`);
    return {
      cleanup: async () => {
        await exec(['sysctl', '-w', 'net.ipv4.tcp_migrate_req=0'], { env: ctx.env, timeoutMs: 10_000 });
      },
      notes: ["net.ipv4.tcp_migrate_req=1 in the bench's namespace"],
    };
  },
};
