// `baseline`: the same servers and the same load, and no reload at all. Every
// other row's "added latency" is measured against it (on the same kernel).

import { noCleanup, type Strategy } from './strategy.js';

export const baseline: Strategy = {
  name: 'baseline',
  summary: 'no reloads: the same load, for the added-latency columns',
  haproxyMode: 'sf',
  reloads: false,
  kernelNeeds: [],
  prepare: async () => ({ cleanup: noCleanup, notes: [] }),
};
