// `haproxy-seamless`: HAProxy's own fix (1.8+). The stats socket has
// `expose-fd listeners` and the new process is started with `-x SOCKET`: it
// receives the listening sockets from the old process instead of binding new
// ones, so no listener ever closes with SYNs in its queue. Nothing is held.

import { noCleanup, type Strategy } from './strategy.js';

export const haproxySeamless: Strategy = {
  name: 'haproxy-seamless',
  summary: "HAProxy's listener hand-over: `expose-fd listeners` + `haproxy -x SOCKET -sf`",
  haproxyMode: 'seamless',
  reloads: true,
  kernelNeeds: [],
  prepare: async () => ({ cleanup: noCleanup, notes: ['reload: haproxy -f CFG -p PIDFILE -D -x STATS_SOCKET -sf OLDPIDS'] }),
};
