/**
 * A route-netlink connection, optionally inside a network namespace. Every
 * kernel-object function (links, qdiscs, filters) takes one of these.
 */
import { NETLINK_ROUTE, NetlinkSocket, type OpenOptions } from '../netlink/socket.js';

/**
 * A route-netlink connection, optionally inside a network namespace; what the Plug
 * control API talks through. CLI equivalent: none as such; `tc -n NS` and `ip -n NS`
 * reach a namespace the same way. close() it when done.
 */
export class Rtnl {
  readonly sock: NetlinkSocket;
  /** The namespace this connection is bound to, if not the caller's own. */
  readonly netns?: string;

  private constructor(sock: NetlinkSocket, netns?: string) {
    this.sock = sock;
    this.netns = netns;
  }

  /** Opens NETLINK_ROUTE in the current namespace or in `opts.netns` (a name under /run/netns or a path). */
  static open(opts: OpenOptions = {}): Rtnl {
    return new Rtnl(NetlinkSocket.open(NETLINK_ROUTE, opts), opts.netns);
  }

  close(): void {
    this.sock.close();
  }
}

/** Opens a connection, runs `fn`, and always closes it. */
export async function withRtnl<T>(opts: OpenOptions, fn: (rt: Rtnl) => Promise<T>): Promise<T> {
  const rt = Rtnl.open(opts);
  try {
    return await fn(rt);
  } finally {
    rt.close();
  }
}
