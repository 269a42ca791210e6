// `none`: the seed's first experiment. `haproxy -f CFG -p PIDFILE -D -sf $(cat
// PIDFILE)`, unprotected: SYNs that land in the old process's accept queue as it
// closes its listener are reset (the seed saw 0.25% of requests fail).

import { noCleanup, type Strategy } from './strategy.js';

export const none: Strategy = {
  name: 'none',
  summary: "plain `haproxy -sf` reload, nothing held (the seed's first experiment)",
  haproxyMode: 'sf',
  reloads: true,
  kernelNeeds: [],
  prepare: async () => ({ cleanup: noCleanup, notes: [] }),
};
