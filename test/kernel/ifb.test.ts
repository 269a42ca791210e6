/**
 * The IFB device synhold carries its plug on (src/rtnl/link.ts addIfb), on the real kernel in a
 * fresh namespace, read back with `ip -j` and `tc -s -j`: it must send nothing of its own. An IFB
 * is an Ethernet-type device, so with IPv6's defaults it takes a link-local address when it goes
 * up and sends DAD, MLD and router solicitations out through its root qdisc, where the plug is:
 * packets held with the SYNs, counted as held, and taken for a held SYN by anyone reading the
 * queue length (found in the kernel lab: a test's "the SYN is in the plug" was an IPv6 packet).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { withNetns, type TestNetns } from '../helpers/netns.js';
import { Rtnl } from '../../src/rtnl/rtnl.js';
import { addIfb, deleteLink, setLinkUp } from '../../src/rtnl/link.js';

interface IpLink {
  ifname: string;
  addr_info?: { family: string }[];
  inet6_addr_gen_mode?: string;
}

function sentByRoot(ns: TestNetns, dev: string): number {
  const q = ns.tcJson(['-s', 'qdisc', 'show', 'dev', dev]) as { root?: boolean; packets?: number }[];
  return q.find((x) => x.root)?.packets ?? 0;
}

test("addIfb: addrgenmode none, no IPv6 address, and nothing sent through its root qdisc once up (`ip link add` alone: IPv6's own packets)", async () => {
  await withNetns(async (ns) => {
    const rt = Rtnl.open({ netns: ns.name });
    try {
      await addIfb(rt, 'shifb0');
      const detail = (ns.ipJson(['-d', 'link', 'show', 'dev', 'shifb0']) as IpLink[])[0]!;
      assert.equal(detail.inet6_addr_gen_mode, 'none', JSON.stringify(detail));
      await setLinkUp(rt, 'shifb0', true);
      // The control, made by iproute2 alone: the same device type with IPv6's defaults.
      ns.exec('ip', ['link', 'add', 'shifb1', 'type', 'ifb']);
      ns.exec('ip', ['link', 'set', 'shifb1', 'up']);
      // The kernel sends the first MLD report and router solicitation within a few seconds of up
      // (DAD waits about 1 s); 5 s: long enough for the control to show them.
      const end = Date.now() + 5_000;
      while (Date.now() < end && sentByRoot(ns, 'shifb1') === 0) await sleep(100);
      assert.ok(sentByRoot(ns, 'shifb1') > 0, 'the control sent IPv6 packets of its own (else this test proves nothing here)');
      assert.equal(sentByRoot(ns, 'shifb0'), 0, "synhold's IFB sent nothing");
      const addrs = (ns.ipJson(['addr', 'show', 'dev', 'shifb0']) as IpLink[])[0]!.addr_info ?? [];
      assert.deepEqual(addrs, [], 'no address at all');
      await deleteLink(rt, 'shifb0');
      ns.exec('ip', ['link', 'del', 'shifb1']);
      assert.deepEqual(
        (ns.ipJson(['link', 'show']) as IpLink[]).map((l) => l.ifname),
        ['lo'],
      );
    } finally {
      rt.close();
    }
  });
});
