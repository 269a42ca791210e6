/**
 * The plug backend's egress topology choice without a kernel: the default (auto), what setup
 * takes as "this kernel cannot redirect" (the one reason auto builds prio instead, besides an
 * `ingress` qdisc found on the device), and how status renders what was built. The kernel side
 * (auto building clsact, and prio beside an ingress qdisc) is test/lab-guest/plug.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizeConfig } from '../../src/model/config.js';
import { FilterPrioInUseError } from '../../src/model/errors.js';
import { NetlinkError } from '../../src/netlink/errors.js';
import { redirectUnsupported } from '../../src/backends/plug.js';
import { formatStatus } from '../../src/cli/format.js';
import type { StatusReport } from '../../src/protect/setup.js';

test('the default egress topology is auto; prio and clsact are taken as asked; while-holding is refused only with prio', () => {
  assert.equal(normalizeConfig({ ports: [80] }).egressTopology, 'auto');
  assert.equal(normalizeConfig({ ports: [80], egressTopology: 'prio' }).egressTopology, 'prio');
  assert.equal(normalizeConfig({ ports: [80], egressTopology: 'clsact' }).egressTopology, 'clsact');
  assert.equal(normalizeConfig({ ports: [80], backend: 'plug', steering: 'while-holding' }).steering, 'while-holding');
  assert.throws(
    () => normalizeConfig({ ports: [80], backend: 'plug', egressTopology: 'prio', steering: 'while-holding' }),
    /needs the plug backend's redirect topology/,
  );
  assert.throws(() => normalizeConfig({ ports: [80], egressTopology: 'tree' as 'auto' }), /--egress-topology must be auto, prio or clsact, not "tree"/);
});

test('redirectUnsupported: a missing link type, qdisc or action kind is a reason to build prio; nothing else is', () => {
  const nl = (errno: number, kernelMessage?: string) =>
    new NetlinkError({ op: 'RTM_NEWLINK', object: 'synhold-ifb1 type ifb', errno, ...(kernelMessage ? { kernelMessage } : {}) });
  // What rtnetlink answers for an IFB device type it has no module for, and for a qdisc or action kind.
  assert.match(redirectUnsupported(nl(95, 'Unknown device type'))!, /EOPNOTSUPP.*Unknown device type/);
  assert.match(redirectUnsupported(nl(2, 'Specified qdisc kind is unknown'))!, /ENOENT.*kind is unknown/);
  assert.match(redirectUnsupported(nl(2, 'Failed to load TC action module'))!, /action module/);
  // Permissions, a device gone, a busy priority, a bad request: prio would not help, or would hide a fault.
  for (const errno of [1, 13, 16, 17, 19, 22]) assert.equal(redirectUnsupported(nl(errno)), undefined, `errno ${errno}`);
  assert.equal(redirectUnsupported(new FilterPrioInUseError('taken')), undefined);
  assert.equal(redirectUnsupported(new Error('ENOENT')), undefined, 'only the kernel says what it lacks');
});

test('status says which egress topology was built, and why only when auto fell back to prio', () => {
  const base: StatusReport = {
    setUp: true,
    backend: 'plug',
    backendReason: 'auto: this kernel has sch_plug',
    config: normalizeConfig({ ports: [16000] }),
    held: false,
    stats: { holds: 0, releasedTotal: 0, dropsTotal: 0, watchdogReleases: 0 },
  };
  const clsact = formatStatus({
    ...base,
    topology: { installed: 'clsact', reason: "dev lo's root qdisc untouched, matching SYNs redirected to an IFB" },
    steering: { installed: 'while-holding' },
  });
  assert.match(clsact, /\(egress, clsact -> IFB, its filters only while holding\)/);
  const prio = formatStatus({
    ...base,
    topology: { installed: 'prio', reason: 'auto: dev lo has an ingress qdisc, which has no egress hook for the clsact redirect' },
  });
  assert.match(prio, /\(egress, prio root \(auto: dev lo has an ingress qdisc, which has no egress hook for the clsact redirect\)\)/);
  const asked = formatStatus({ ...base, config: normalizeConfig({ ports: [16000], egressTopology: 'prio' }), topology: { installed: 'prio' } });
  assert.match(asked, /\(egress, prio root\)/);
});
