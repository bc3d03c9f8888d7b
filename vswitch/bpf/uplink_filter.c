// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
//
// The uplink's XDP program: redirect to the switch's AF_XDP socket only the frames
// the switch owns on the node's shared NIC, pass everything else to the host stack.
//
// Taken (XDP_REDIRECT into xsks_map[rx queue]):
//   1. IPv4 UDP to one of the node's addresses, destination port = VXLAN port;
//   2. IPv4 TCP or UDP to one of the node's addresses, destination port within the
//      NodePort range (when the range is enabled: nodeport_lo <= port <= nodeport_hi).
// Everything else gets XDP_PASS: ARP (requests and replies), IPv6, VLAN-tagged
// frames, ICMP, other TCP/UDP (SSH, kubelet, the API server), IPv4 fragments other
// than the first (they carry no ports; the host reassembles or drops them), and
// frames too short to hold the headers. A queue without a socket in xsks_map also
// passes (bpf_redirect_map's fallback action), so a filter left attached after the
// switch died (SIGKILL) hands everything to the host instead of black-holing it.
//
// Self-contained on purpose (no kernel or libbpf headers; common.h stands in for
// them): the build needs clang only, which the vendored libxdp already needs.
// vswitchd fills `config` (key 0) and `xsks_map` at run time (vswitch/src/port/xdp_filter.rs) and changes the node
// addresses in place when the uplink's addresses change.

#include "common.h"

// Must match `FilterConfig` in vswitch/src/port/xdp_filter.rs (repr(C), 48 bytes).
#define MAX_NODE_IPS 8
struct filter_config {
	__u32 node_ips[MAX_NODE_IPS]; // network byte order; the first n_ips are valid
	__u32 n_ips;
	__u16 vxlan_port;  // host byte order
	__u16 nodeport_lo; // host byte order; lo > hi: NodePorts not taken
	__u16 nodeport_hi;
	__u16 pad;
	__u32 pad2;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter_config);
} config SEC(".maps");

#define ETH_P_IP_BE 0x0008 // htons(0x0800) on a little-endian host
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

// VXLAN decapsulation of cached decisions (XDP fast path, fastpath_vxlan.h).
#define VX_UPLINK 1
#include "fastpath_vxlan.h"

static __attribute__((always_inline)) __u16 be16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

SEC("xdp")
int vswitch_uplink(struct xdp_md *ctx)
{
	const __u8 *data = (const __u8 *)(long)ctx->data;
	const __u8 *end = (const __u8 *)(long)ctx->data_end;
	__u32 zero = 0;

	if (data + ETH_HLEN + 20 > end)
		return XDP_PASS;
	if (*(const __u16 *)(data + 12) != ETH_P_IP_BE)
		return XDP_PASS;
	const __u8 *ip = data + ETH_HLEN;
	__u8 ver_ihl = ip[0];
	if ((ver_ihl >> 4) != 4)
		return XDP_PASS;
	__u32 ihl = (ver_ihl & 0x0f) * 4;
	if (ihl < 20)
		return XDP_PASS;
	// Fragment offset non-zero: no transport header here.
	if (be16(ip + 6) & 0x1fff)
		return XDP_PASS;
	__u8 proto = ip[9];
	if (proto != IPPROTO_UDP && proto != IPPROTO_TCP)
		return XDP_PASS;
	// ihl is at most 60: the verifier sees the bounded offset and the check below.
	const __u8 *l4 = ip + ihl;
	if (l4 + 4 > end)
		return XDP_PASS;
	__u16 dport = be16(l4 + 2);

	struct filter_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;
	int take = 0;
	if (proto == IPPROTO_UDP && dport == cfg->vxlan_port && cfg->vxlan_port != 0)
		take = 1;
	else if (dport >= cfg->nodeport_lo && dport <= cfg->nodeport_hi)
		take = 1;
	if (!take)
		return XDP_PASS;

	__u32 daddr = *(const __u32 *)(ip + 16);
	__u32 n = cfg->n_ips;
	int mine = 0;
#pragma unroll
	for (int i = 0; i < MAX_NODE_IPS; i++) {
		if (i < n && cfg->node_ips[i] == daddr)
			mine = 1;
	}
	if (!mine)
		return XDP_PASS;
	if (proto == IPPROTO_UDP && dport == cfg->vxlan_port) {
		int r = vx_decap(ctx);
		if (r >= 0)
			return r;
	}
	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
