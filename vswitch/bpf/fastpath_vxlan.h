// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
//
// VXLAN encapsulation and decapsulation in the XDP fast path (docs/overlay.md,
// "XDP fast path for the tunnel"). Included by port_fastpath.c (encap: a pod's frame
// to a remote node) and by uplink_filter.c with VX_UPLINK defined (decap: a tunnel
// frame from a remote node to a local pod). Layouts must match
// vswitch/src/port/fastpath_tunnel.rs.
//
// Both directions execute a decision the user-space switch made and cached. The
// key of an entry is *exact*: the packet words of the switch's flow key (in_port,
// eth_type, vlan_tci, MACs, ip_proto, TTL, TOS, ip_frag, IPv4 addresses, L4 ports,
// TCP flags; flow/key.rs) computed here exactly as flow/extract.rs computes them,
// with the ingress ifindex in place of in_port. An exact key is at least as specific
// as any megaflow, so every frame it matches would have got the same actions from
// the switch (the metadata words are zero for a frame entering from a port, and
// after decap depend only on the outer decision, itself covered by the exact outer
// words). Frames this parser does not fully understand (IPv4 options, fragments,
// protocols other than TCP/UDP/ICMP, short L4 headers, trailing bytes after the
// IPv4 packet of a tunnel frame) never match and take the slow path.
//
// Every entry carries the switch-wide epoch it was computed in (epoch_map) and is
// ignored once that changed; its egress must be in tx_ports. Frames are counted in
// fp_stats like the L2 fast path's (fp_count). Those maps, like the prelude, come
// from common.h.

#define VX_OVERHEAD 50
#define VX_ENTRIES 16384

// 48 bytes; `TunFlowKey` in fastpath_tunnel.rs. w[0] has no in_port (in_ifindex
// stands for it).
struct tun_flow_key {
	__u32 in_ifindex;
	__u32 pad;
	__u64 w[5];
};

// 80 bytes; `TunEncap` in fastpath_tunnel.rs. Addresses and ports as on the wire.
struct tun_encap {
	__u8 outer_dst[6];
	__u8 outer_src[6];
	__u8 inner_dst[6];
	__u8 inner_src[6];
	__u32 saddr;
	__u32 daddr;
	__u8 vni[4]; // VXLAN bytes 4..8: VNI (3 bytes) and the reserved zero
	__u16 sport;
	__u16 dport;
	__u32 mtu;    // largest outer IPv4 packet
	__u32 max_in; // largest frame the ingress port accepts
	__u32 dec_ttl;
	__u32 out_ifindex;
	__u32 out_port;
	__u32 in_port;
	__u32 epoch;
	__u32 pad;
	__u64 last_seen;
};

// 88 bytes; `TunDecapKey` in fastpath_tunnel.rs.
struct tun_decap_key {
	__u32 in_ifindex;
	__u32 vni; // host byte order
	__u64 outer[5];
	__u64 inner[5];
};

// 48 bytes; `TunDecap` in fastpath_tunnel.rs.
struct tun_decap {
	__u8 inner_dst[6];
	__u8 inner_src[6];
	__u32 dec_ttl;
	__u32 max_in;
	__u32 out_ifindex;
	__u32 out_port;
	__u32 in_port;
	__u32 epoch;
	__u32 pad;
	__u64 last_seen;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, VX_ENTRIES);
	__type(key, struct tun_flow_key);
	__type(value, struct tun_encap);
} tun_encap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, VX_ENTRIES);
	__type(key, struct tun_decap_key);
	__type(value, struct tun_decap);
} tun_decap SEC(".maps");

static __attribute__((always_inline)) __u64 vx_be16(const __u8 *p)
{
	return ((__u64)p[0] << 8) | p[1];
}

static __attribute__((always_inline)) __u64 vx_be32(const __u8 *p)
{
	return ((__u64)p[0] << 24) | ((__u64)p[1] << 16) | ((__u64)p[2] << 8) | p[3];
}

static __attribute__((always_inline)) __u64 vx_mac(const __u8 *p)
{
	return ((__u64)p[0] << 40) | ((__u64)p[1] << 32) | ((__u64)p[2] << 24) |
	       ((__u64)p[3] << 16) | ((__u64)p[4] << 8) | p[5];
}

// The packet words 0..4 of the flow key of the untagged Ethernet/IPv4 frame at
// f..end, as flow/extract.rs computes them (in_port left 0). Returns the IPv4
// total length, or 0 when the frame is one this parser does not take: not IPv4,
// IPv4 options, a fragment, a protocol other than TCP/UDP/ICMP, or a header cut
// short.
static __attribute__((always_inline)) __u32 vx_words(const __u8 *f, const __u8 *end, __u64 *w)
{
	if (f + 14 + 20 > end)
		return 0;
	if (f[12] != 0x08 || f[13] != 0x00)
		return 0;
	const __u8 *ip = f + 14;
	if (ip[0] != 0x45)
		return 0;
	__u32 total = vx_be16(ip + 2);
	if (total < 20 || (long)(14 + total) > (long)(end - f))
		return 0;
	// Any fragment (MF or an offset) goes to the slow path.
	if (vx_be16(ip + 6) & 0x3fff)
		return 0;
	__u8 proto = ip[9];
	const __u8 *l4 = ip + 20;
	__u32 l4len = total - 20;
	__u64 tp;
	if (proto == 6) {
		if (l4 + 20 > end || l4len < 20)
			return 0;
		__u32 doff = (l4[12] >> 4) * 4;
		if (doff < 20 || doff > l4len)
			return 0;
		tp = vx_be16(l4) | (vx_be16(l4 + 2) << 16) | ((vx_be16(l4 + 12) & 0x0fff) << 32);
	} else if (proto == 17) {
		if (l4 + 8 > end || l4len < 8)
			return 0;
		tp = vx_be16(l4) | (vx_be16(l4 + 2) << 16);
	} else if (proto == 1) {
		if (l4 + 8 > end || l4len < 8)
			return 0;
		tp = (__u64)l4[0] | ((__u64)l4[1] << 16);
	} else {
		return 0;
	}
	w[0] = 0x0800ULL << 32;
	w[1] = vx_mac(f + 6) | ((__u64)proto << 48) | ((__u64)ip[8] << 56);
	w[2] = vx_mac(f) | ((__u64)ip[1] << 48);
	w[3] = vx_be32(ip + 12) | (vx_be32(ip + 16) << 32);
	w[4] = tp;
	return total;
}

// One's complement helpers as flow/rewrite.rs has them (the checksum bits come out
// identical to the slow path's).
static __attribute__((always_inline)) __u16 vx_add1c(__u16 a, __u16 b)
{
	__u32 s = (__u32)a + b;
	return (__u16)((s & 0xffff) + (s >> 16));
}

// dec_ttl on the IPv4 header at ip: TTL - 1, checksum updated incrementally
// (rewrite::dec_ttl). The caller's key guarantees TTL > 1.
static __attribute__((always_inline)) void vx_dec_ttl(__u8 *ip)
{
	__u16 word = (__u16)vx_be16(ip + 8);
	__u16 nw = word - 0x100;
	__u16 csum = (__u16)vx_be16(ip + 10);
	__u16 c = ~vx_add1c(~csum, vx_add1c(~word, nw));
	ip[8] = nw >> 8;
	ip[10] = c >> 8;
	ip[11] = c & 0xff;
}

#ifndef VX_UPLINK
// Encapsulation on a pod port: returns an XDP action, or -1 for the slow path.
static __attribute__((always_inline)) int vx_encap(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	struct tun_flow_key k;
	k.in_ifindex = ctx->ingress_ifindex;
	k.pad = 0;
	if (!vx_words(data, end, k.w))
		return -1;
	struct tun_encap *v = bpf_map_lookup_elem(&tun_encap, &k);
	if (!v || !fp_usable(v->epoch, v->out_ifindex))
		return -1;
	__u32 out = v->out_ifindex;
	__u64 len = (__u64)(end - data);
	// Too big for the port or for the tunnel: the slow path drops it or answers
	// ICMP fragmentation-needed.
	if (len > v->max_in || len + 36 > v->mtu || len > 0xffff - 64)
		return -1;
	if (data + 34 > end)
		return -1;
	const __u8 *ip = data + 14;
	__u32 dec = v->dec_ttl;
	if (dec && ip[8] <= 1)
		return -1;
	__u8 tos = ip[1];
	__u8 df = ip[6] & 0x40;
	__u8 mac[12];
	__builtin_memcpy(mac, v->inner_dst, 12);
	__u32 in_port = v->in_port, out_port = v->out_port;
	__u64 now = bpf_ktime_get_ns();
	if (now - v->last_seen > REFRESH_NS)
		v->last_seen = now;
	// Copy what the header needs before the value pointer is no longer needed.
	__u8 hdr[VX_OVERHEAD];
	__builtin_memcpy(hdr, v->outer_dst, 6);
	__builtin_memcpy(hdr + 6, v->outer_src, 6);
	hdr[12] = 0x08;
	hdr[13] = 0x00;
	__u32 ip_len = len + 36;
	hdr[14] = 0x45;
	hdr[15] = tos;
	hdr[16] = ip_len >> 8;
	hdr[17] = ip_len & 0xff;
	hdr[18] = 0;
	hdr[19] = 0;
	hdr[20] = df;
	hdr[21] = 0;
	hdr[22] = 64;
	hdr[23] = 17;
	hdr[24] = 0;
	hdr[25] = 0;
	__builtin_memcpy(hdr + 26, &v->saddr, 4);
	__builtin_memcpy(hdr + 30, &v->daddr, 4);
	__builtin_memcpy(hdr + 34, &v->sport, 2);
	__builtin_memcpy(hdr + 36, &v->dport, 2);
	__u32 udp_len = len + 16;
	hdr[38] = udp_len >> 8;
	hdr[39] = udp_len & 0xff;
	hdr[40] = 0;
	hdr[41] = 0;
	hdr[42] = 0x08;
	hdr[43] = 0;
	hdr[44] = 0;
	hdr[45] = 0;
	__builtin_memcpy(hdr + 46, v->vni, 4);
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 20; i += 2)
		sum += ((__u32)hdr[14 + i] << 8) | hdr[15 + i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	__u16 c = ~(__u16)sum;
	hdr[24] = c >> 8;
	hdr[25] = c & 0xff;

	if (bpf_xdp_adjust_head(ctx, -VX_OVERHEAD))
		return -1;
	data = (__u8 *)(long)ctx->data;
	end = (__u8 *)(long)ctx->data_end;
	if (data + VX_OVERHEAD + 34 > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, hdr, VX_OVERHEAD);
	// The inner frame as the switch's actions leave it: MACs, dec_ttl.
	__builtin_memcpy(data + VX_OVERHEAD, mac, 12);
	if (dec)
		vx_dec_ttl(data + VX_OVERHEAD + 14);
	fp_count(in_port, len, out_port, len + VX_OVERHEAD);
	return bpf_redirect_map(&tx_ports, out, 0);
}
#else
// Decapsulation on the uplink, for a frame the filter found to be UDP to one of
// the node's addresses and the VXLAN port: returns an XDP action, or -1 for the
// slow path (the AF_XDP socket).
static __attribute__((always_inline)) int vx_decap(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	struct tun_decap_key k;
	k.in_ifindex = ctx->ingress_ifindex;
	__u32 total = vx_words(data, end, k.outer);
	// UDP, and nothing after the outer IPv4 packet (the slow path would trim it).
	if (!total || (long)(14 + total) != (long)(end - data) || data[14 + 9] != 17)
		return -1;
	if (data + VX_OVERHEAD > end)
		return -1;
	const __u8 *vx = data + 42;
	if (!(vx[0] & 0x08))
		return -1;
	k.vni = ((__u32)vx[4] << 16) | ((__u32)vx[5] << 8) | vx[6];
	if (!vx_words(data + VX_OVERHEAD, end, k.inner))
		return -1;
	struct tun_decap *v = bpf_map_lookup_elem(&tun_decap, &k);
	if (!v || !fp_usable(v->epoch, v->out_ifindex))
		return -1;
	__u32 out = v->out_ifindex;
	__u64 len = (__u64)(end - data);
	if (len > v->max_in)
		return -1;
	__u32 dec = v->dec_ttl;
	__u8 mac[12];
	__builtin_memcpy(mac, v->inner_dst, 12);
	__u32 in_port = v->in_port, out_port = v->out_port;
	__u64 now = bpf_ktime_get_ns();
	if (now - v->last_seen > REFRESH_NS)
		v->last_seen = now;
	if (bpf_xdp_adjust_head(ctx, VX_OVERHEAD))
		return -1;
	data = (__u8 *)(long)ctx->data;
	end = (__u8 *)(long)ctx->data_end;
	if (data + 34 > end)
		return XDP_ABORTED;
	__u8 *ip = data + 14;
	if (dec) {
		if (ip[8] <= 1)
			return XDP_ABORTED;
		vx_dec_ttl(ip);
	}
	__builtin_memcpy(data, mac, 12);
	fp_count(in_port, len, out_port, len - VX_OVERHEAD);
	return bpf_redirect_map(&tx_ports, out, 0);
}
#endif
