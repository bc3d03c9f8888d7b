// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
//
// Established conntrack connections with their NAT (Services: DNAT to the
// endpoint, reverse translation of replies), executed in the kernel. Included by
// port_fastpath.c after its maps; called when the L2 fdb has no entry for a frame.
//
// The worker writes one entry per direction of a connection once conntrack has
// seen it past its first packet (TCP: ESTABLISHED and assured; UDP: any later
// packet) and the rest of the decision was plain forwarding to one port:
//     nat_flows[{saddr, daddr, sport, dport, proto}] =
//         {expected ingress ifindex and Ethernet addresses, new Ethernet
//          addresses, new saddr/daddr/sport/dport, dec_ttl, egress ifindex,
//          in/out port numbers, epoch, idle limit, last_seen}
// Here: IPv4 without options or fragmentation, TCP without SYN/FIN/RST (those go
// to the slow path so conntrack's state machine sees every transition), UDP.
// An entry counts only while its epoch is current, the frame arrived on the
// expected interface with the expected addresses, and it has been used within
// its idle limit (below the connection's conntrack timeout, so the kernel stops
// before conntrack would expire the connection). Layouts must match
// vswitch/src/port/fastpath_nat.rs.

#define NAT_ENTRIES 65536

// 16 bytes; `NatKey` in fastpath_nat.rs. Addresses and ports as on the wire.
struct nat_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

// 80 bytes; `NatValue` in fastpath_nat.rs.
struct nat_value {
	__u32 in_ifindex;
	__u32 out_ifindex;
	__u32 in_port;
	__u32 out_port;
	__u8 match_dst[6]; // Ethernet addresses the frame must arrive with
	__u8 match_src[6];
	__u8 new_dst[6]; // and leaves with
	__u8 new_src[6];
	__u32 saddr; // new values, as on the wire
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u32 epoch;
	__u8 dec_ttl;
	__u8 pad[7];
	__u64 idle_ns;
	__u64 last_seen; // bpf_ktime_get_ns, refreshed about once a second
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NAT_ENTRIES);
	__type(key, struct nat_key);
	__type(value, struct nat_value);
} nat_flows SEC(".maps");

static __attribute__((always_inline)) __u16 nat_fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)c;
}

// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), on 16-bit words as stored.
static __attribute__((always_inline)) __u16 nat_csum16(__u16 check, __u16 from, __u16 to)
{
	__u32 c = (__u16)~check;
	c += (__u16)~from;
	c += to;
	return (__u16)~nat_fold(c);
}

static __attribute__((always_inline)) __u16 nat_csum32(__u16 check, __u32 from, __u32 to)
{
	__u32 c = (__u16)~check;
	c += (__u16)~(from & 0xffff);
	c += (__u16)~(from >> 16);
	c += to & 0xffff;
	c += to >> 16;
	return (__u16)~nat_fold(c);
}

static __attribute__((always_inline)) int nat_mac_eq(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b &&
	       *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

// The XDP verdict for a frame of an offloaded connection, or -1: slow path.
static __attribute__((always_inline)) int nat_fastpath(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	const __u8 *end = (const __u8 *)(long)ctx->data_end;

	// Ethernet (14) + IPv4 without options (20) + the larger L4 header (TCP, 20).
	if (data + 14 + 20 + 8 > end)
		return -1;
	if (*(const __u16 *)(data + 12) != 0x0008) // IPv4, as read on a little-endian host
		return -1;
	__u8 *ip = data + 14;
	if (ip[0] != 0x45) // version 4, no options
		return -1;
	if (*(const __u16 *)(ip + 6) & 0xff3f) // MF or a fragment offset (htons(0x3fff))
		return -1;
	__u8 proto = ip[9];
	__u8 *l4 = ip + 20;
	__u16 *l4csum;
	if (proto == 6) {
		if (l4 + 20 > end)
			return -1;
		if (l4[13] & 0x07) // FIN, SYN, RST: conntrack must see them
			return -1;
		l4csum = (__u16 *)(l4 + 16);
	} else if (proto == 17) {
		l4csum = (__u16 *)(l4 + 6);
	} else {
		return -1;
	}

	struct nat_key k;
	k.saddr = *(const __u32 *)(ip + 12);
	k.daddr = *(const __u32 *)(ip + 16);
	k.sport = *(const __u16 *)l4;
	k.dport = *(const __u16 *)(l4 + 2);
	k.proto = proto;
	k.pad[0] = 0;
	k.pad[1] = 0;
	k.pad[2] = 0;
	struct nat_value *v = bpf_map_lookup_elem(&nat_flows, &k);
	if (!v)
		return -1;
	if (v->in_ifindex != ctx->ingress_ifindex)
		return -1;
	if (!nat_mac_eq(data, v->match_dst) || !nat_mac_eq(data + 6, v->match_src))
		return -1;
	__u64 now = bpf_ktime_get_ns();
	if (now - v->last_seen > v->idle_ns)
		return -1;
	if (v->dec_ttl && ip[8] <= 1)
		return -1;
	__u32 out = v->out_ifindex;
	if (!fp_usable(v->epoch, out))
		return -1;

	// Rewrite: IPv4 header (addresses, TTL) with its checksum, then the ports
	// and the TCP/UDP checksum (pseudo-header addresses and ports). A UDP
	// checksum of 0 (none) stays 0; a computed 0 is sent as 0xffff.
	__u16 ipcsum = *(__u16 *)(ip + 10);
	__u16 l4c = *l4csum;
	int udp_none = proto == 17 && l4c == 0;
	__u32 ns = v->saddr, nd = v->daddr;
	__u16 nsp = v->sport, ndp = v->dport;
	if (k.saddr != ns) {
		ipcsum = nat_csum32(ipcsum, k.saddr, ns);
		l4c = nat_csum32(l4c, k.saddr, ns);
		*(__u32 *)(ip + 12) = ns;
	}
	if (k.daddr != nd) {
		ipcsum = nat_csum32(ipcsum, k.daddr, nd);
		l4c = nat_csum32(l4c, k.daddr, nd);
		*(__u32 *)(ip + 16) = nd;
	}
	if (k.sport != nsp) {
		l4c = nat_csum16(l4c, k.sport, nsp);
		*(__u16 *)l4 = nsp;
	}
	if (k.dport != ndp) {
		l4c = nat_csum16(l4c, k.dport, ndp);
		*(__u16 *)(l4 + 2) = ndp;
	}
	if (v->dec_ttl) {
		__u16 old = *(__u16 *)(ip + 8); // TTL and protocol
		ip[8] -= 1;
		ipcsum = nat_csum16(ipcsum, old, *(__u16 *)(ip + 8));
	}
	*(__u16 *)(ip + 10) = ipcsum;
	if (udp_none)
		l4c = 0;
	else if (proto == 17 && l4c == 0)
		l4c = 0xffff;
	*l4csum = l4c;
	__builtin_memcpy(data, v->new_dst, 6);
	__builtin_memcpy(data + 6, v->new_src, 6);

	__u64 len = (__u64)(end - data);
	fp_count(v->in_port, len, v->out_port, len);
	if (now - v->last_seen > REFRESH_NS)
		v->last_seen = now;
	return bpf_redirect_map(&tx_ports, out, 0);
}
