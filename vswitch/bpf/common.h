// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
//
// What the switch's XDP programs (uplink_filter.c, port_fastpath.c and the
// fast-path headers they include) share: the prelude that stands in for kernel
// and libbpf headers (the programs are self-contained on purpose: the build needs
// clang only), the AF_XDP socket map, the maps every fast-path program shares
// (vswitchd hands each program the same descriptors; layouts must match
// vswitch/src/port/fastpath.rs) and their per-port counting.

#ifndef VSWITCH_BPF_COMMON_H
#define VSWITCH_BPF_COMMON_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_XSKMAP 17
#define BPF_MAP_TYPE_DEVMAP_HASH 25

enum { XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT };

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_xdp_adjust_head)(struct xdp_md *ctx, int delta) = (void *)44;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;

#define ETH_HLEN 14

// The program's own AF_XDP sockets, by rx queue.
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

// Per CPU, indexed by switch port number; `FpStats` in fastpath.rs.
struct fp_stats {
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 tx_packets;
	__u64 tx_bytes;
};

#define MAX_PORTS 1024

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} epoch_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, struct fp_stats);
} fp_stats SEC(".maps");

// Counts a frame of `in_len` bytes received on `in_port` and sent, `out_len`
// bytes long, on `out_port`.
static __attribute__((always_inline)) void fp_count(__u32 in_port, __u64 in_len, __u32 out_port,
						    __u64 out_len)
{
	struct fp_stats *s = bpf_map_lookup_elem(&fp_stats, &in_port);
	if (s) {
		s->rx_packets++;
		s->rx_bytes += in_len;
	}
	s = bpf_map_lookup_elem(&fp_stats, &out_port);
	if (s) {
		s->tx_packets++;
		s->tx_bytes += out_len;
	}
}

// How often an entry's last_seen is refreshed (it shows vswitchd the entry is in use).
#define REFRESH_NS 1000000000ULL

// An entry computed in `epoch` and sending to `out_ifindex` may be used: the
// epoch is still current and the egress is in tx_ports.
static __attribute__((always_inline)) int fp_usable(__u32 epoch, __u32 out_ifindex)
{
	__u32 zero = 0;
	__u32 *e = bpf_map_lookup_elem(&epoch_map, &zero);
	if (!e || *e != epoch)
		return 0;
	return bpf_map_lookup_elem(&tx_ports, &out_ifindex) != 0;
}

#endif
