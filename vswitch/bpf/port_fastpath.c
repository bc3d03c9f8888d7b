// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
//
// The XDP fast path of a (non-uplink) AF_XDP port: forwarding decisions the switch
// cached are executed here, in the kernel; everything else goes to the switch's
// AF_XDP socket exactly as libxdp's default program would send it.
//
// The user-space switch stays the slow path and the source of truth. When it has
// forwarded a frame whose cached actions are plain L2 forwarding to one known
// unicast port (NORMAL resolved to one port, or output:P; no rewrite, no ct, no
// policy, no flood) and whose megaflow consulted only in_port and Ethernet
// addresses/type, it writes
//     fdb[{ingress ifindex, eth_dst, eth_src, eth_type}] =
//         {egress ifindex, egress port, ingress port, epoch, last_seen}
// and this program redirects later frames with that key straight to the egress
// veth (bpf_redirect_map on tx_ports), counting them per CPU in `fp_stats`.
//
// Never stale: an entry counts only while its epoch equals epoch_map[0]. vswitchd
// bumps the epoch on every change that could alter a decision (flows, ports,
// services/policy/overlay state, MAC moves and expiry, captures), so a change is
// in force for the kernel path as soon as the bump is written.
//
// Slow path (XDP_REDIRECT into xsks_map[rx queue]): VLAN-tagged frames, group
// (multicast/broadcast) destinations, frames shorter than an Ethernet header, and
// every fdb miss, stale epoch, or egress not in tx_ports. A queue without a socket
// in xsks_map passes the frame (bpf_redirect_map's fallback action).
//
// Self-contained on purpose (no kernel or libbpf headers; common.h stands in for
// them), like uplink_filter.c. The maps fdb, epoch_map, tx_ports and fp_stats are
// shared by all fast-path ports (vswitchd reuses one set of descriptors for every
// port's object); xsks_map is each port's own. Layouts must match vswitch/src/port/fastpath.rs.

#include "common.h"

// 20 bytes; `FdbKey` in fastpath.rs.
struct fdb_key {
	__u32 in_ifindex;
	__u8 dst[6];
	__u8 src[6];
	__u16 eth_type; // as on the wire (network byte order)
	__u16 pad;
};

// 24 bytes; `FdbValue` in fastpath.rs.
struct fdb_value {
	__u32 out_ifindex;
	__u32 out_port;
	__u32 in_port;
	__u32 epoch;
	__u64 last_seen; // bpf_ktime_get_ns (CLOCK_MONOTONIC), refreshed about once a second
};

#define FDB_ENTRIES 65536

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FDB_ENTRIES);
	__type(key, struct fdb_key);
	__type(value, struct fdb_value);
} fdb SEC(".maps");

#include "fastpath_vxlan.h"
#include "fastpath_nat.h"

SEC("xdp")
int vswitch_fastpath(struct xdp_md *ctx)
{
	const __u8 *data = (const __u8 *)(long)ctx->data;
	const __u8 *end = (const __u8 *)(long)ctx->data_end;

	if (data + ETH_HLEN > end)
		goto slow;
	// Group destination (broadcast, multicast): flooding stays in user space.
	if (data[0] & 1)
		goto slow;
	__u16 type = *(const __u16 *)(data + 12);
	// 802.1Q / 802.1ad (0x8100 / 0x88a8 as read on a little-endian host).
	if (type == 0x0081 || type == 0xa888)
		goto slow;

	struct fdb_key k;
	k.in_ifindex = ctx->ingress_ifindex;
	__builtin_memcpy(k.dst, data, 6);
	__builtin_memcpy(k.src, data + 6, 6);
	k.eth_type = type;
	k.pad = 0;
	struct fdb_value *v = bpf_map_lookup_elem(&fdb, &k);
	if (!v) {
		int r = vx_encap(ctx);
		if (r >= 0)
			return r;
		int nat = nat_fastpath(ctx);
		if (nat >= 0)
			return nat;
		goto slow;
	}
	__u32 out = v->out_ifindex;
	if (!fp_usable(v->epoch, out))
		goto slow;
	__u64 len = (__u64)(end - data);
	fp_count(v->in_port, len, v->out_port, len);
	__u64 now = bpf_ktime_get_ns();
	if (now - v->last_seen > REFRESH_NS)
		v->last_seen = now;
	return bpf_redirect_map(&tx_ports, out, 0);

slow:
	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
