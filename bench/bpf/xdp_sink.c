// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
//
// vswitch-bench's XDP counting sink (sink engine "xdp"), the counterpart of vsb's
// XDP sink: on the sink's interface, every frame is parsed (Ethernet, one optional
// VLAN tag, IPv4 or IPv6, UDP or TCP) for the bench's stamp (magic "VSB1", seq,
// CLOCK_MONOTONIC send time, stream; bench/src/wire.rs). Stamped frames are
// counted, their one-way latency bpf_ktime_get_ns() - stamp (the same clock) goes
// into a per-CPU log-linear histogram when the stamp lies in the trial's window,
// and they are dropped. Everything else (ARP, ND, foreign traffic) is counted and
// passed to the stack. It runs in the receiving CPU's softirq and costs the
// generator's CPU nothing; userspace (bench/src/xdpsink.rs) writes the window into
// `config` before a trial and sums the per-CPU maps after it.
//
// Self-contained (no kernel or libbpf headers): the build needs clang only.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6

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

// Must match `SinkConfig` in bench/src/xdpsink.rs (repr(C), 24 bytes).
struct sink_config {
	__u64 t0;      // stamps before: a previous trial's frames, not counted as stamped
	__u64 t_start; // window [t_start, t_end): delivered, latency recorded
	__u64 t_end;
};

// Must match `Counters` in bench/src/xdpsink.rs (repr(C), 9 x u64).
struct counters {
	__u64 frames;    // every frame seen
	__u64 bytes;     // their bytes (without FCS)
	__u64 magic;     // frames with the stamp (dropped)
	__u64 foreign;   // frames without it (passed)
	__u64 bad;       // stamp in the future (corrupt or another clock)
	__u64 stamped;   // stamp >= t0 (this trial's frames)
	__u64 delivered; // stamp in [t_start, t_end)
	__u64 lat_sum;   // sum of the delivered frames' latencies (ns)
	__u64 reordered; // stamped frames behind a later one of the same stream
};

// Log-linear histogram: values below 2^SUB_BITS ns have a bucket each; above,
// every power of two has 2^SUB_BITS buckets (1/32: ~3% resolution). Must match
// bench/src/xdpsink.rs.
#define SUB_BITS 5
#define SUB (1 << SUB_BITS)
#define MAX_EXP 39 // values of 2^40 ns (~18 minutes) and more go to the last bucket
#define NBUCKETS ((MAX_EXP - SUB_BITS + 2) * SUB)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sink_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NBUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} hist SEC(".maps");

// Per stream (the stamp's stream id; generator thread i uses i + 1), the highest
// sequence number seen on this CPU, as seq | 1 << 32 (0: none yet). Per CPU: a
// stream's frames reach the sink on the CPU that runs its NAPI, so reordering
// across CPUs is not seen (the AF_XDP sink, one socket per queue, has the same
// limit). Cleared by userspace before each trial.
#define STREAMS 257
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STREAMS);
	__type(key, __u32);
	__type(value, __u64);
} last_seq SEC(".maps");

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86dd
#define ETH_P_8021Q 0x8100
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define MAGIC 0x56534231u
#define STAMP_LEN 18

static __attribute__((always_inline)) __u16 be16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

static __attribute__((always_inline)) __u32 log2_u64(__u64 v)
{
	__u32 r = 0;
	if (v >> 32) {
		v >>= 32;
		r += 32;
	}
	if (v >> 16) {
		v >>= 16;
		r += 16;
	}
	if (v >> 8) {
		v >>= 8;
		r += 8;
	}
	if (v >> 4) {
		v >>= 4;
		r += 4;
	}
	if (v >> 2) {
		v >>= 2;
		r += 2;
	}
	if (v >> 1)
		r += 1;
	return r;
}

static __attribute__((always_inline)) __u32 bucket(__u64 v)
{
	if (v < SUB)
		return (__u32)v;
	__u32 e = log2_u64(v);
	if (e > MAX_EXP)
		return NBUCKETS - 1;
	__u32 sub = (__u32)(v >> (e - SUB_BITS)) & (SUB - 1);
	return (e - SUB_BITS + 1) * SUB + sub;
}

SEC("xdp")
int vsbench_xsink(struct xdp_md *ctx)
{
	const __u8 *data = (const __u8 *)(long)ctx->data;
	const __u8 *end = (const __u8 *)(long)ctx->data_end;
	__u32 zero = 0;

	struct counters *c = bpf_map_lookup_elem(&counters, &zero);
	if (!c)
		return XDP_PASS;
	c->frames++;
	c->bytes += end - data;

	const __u8 *p = data + ETH_HLEN;
	if (p > end)
		goto foreign;
	__u16 ethertype = be16(data + 12);
	if (ethertype == ETH_P_8021Q) {
		if (p + 4 > end)
			goto foreign;
		ethertype = be16(p + 2);
		p += 4;
	}
	__u8 proto;
	if (ethertype == ETH_P_IP) {
		if (p + 20 > end)
			goto foreign;
		__u8 vihl = p[0];
		if ((vihl >> 4) != 4)
			goto foreign;
		__u32 ihl = (vihl & 0x0f) * 4;
		if (ihl < 20 || (be16(p + 6) & 0x1fff))
			goto foreign;
		proto = p[9];
		p += ihl;
	} else if (ethertype == ETH_P_IPV6) {
		if (p + 40 > end)
			goto foreign;
		if ((p[0] >> 4) != 6)
			goto foreign;
		proto = p[6];
		p += 40;
	} else {
		goto foreign;
	}
	if (proto == IPPROTO_UDP) {
		p += 8;
	} else if (proto == IPPROTO_TCP) {
		if (p + 20 > end)
			goto foreign;
		__u32 doff = (p[12] >> 4) * 4;
		if (doff < 20)
			goto foreign;
		p += doff;
	} else {
		goto foreign;
	}
	if (p + STAMP_LEN > end)
		goto foreign;
	__u32 magic = ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
	if (magic != MAGIC)
		goto foreign;
	__u64 ts = 0;
#pragma unroll
	for (int i = 7; i >= 0; i--)
		ts = (ts << 8) | p[8 + i];

	c->magic++;
	__u64 now = bpf_ktime_get_ns();
	if (ts > now) {
		c->bad++;
		return XDP_DROP;
	}
	struct sink_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || ts < cfg->t0)
		return XDP_DROP;
	c->stamped++;
	// As SinkCore::on_frame: a frame behind the highest sequence number seen in its
	// stream counts as reordered, and does not move the mark back.
	__u32 stream = (__u32)p[16] | ((__u32)p[17] << 8);
	__u32 seq = (__u32)p[4] | ((__u32)p[5] << 8) | ((__u32)p[6] << 16) | ((__u32)p[7] << 24);
	__u64 *last = bpf_map_lookup_elem(&last_seq, &stream);
	if (last) {
		if ((*last >> 32) && (int)(seq - (__u32)*last) < 0)
			c->reordered++;
		else
			*last = (1ULL << 32) | seq;
	}
	if (ts >= cfg->t_start && ts < cfg->t_end) {
		__u64 lat = now - ts;
		if (lat == 0)
			lat = 1;
		c->delivered++;
		c->lat_sum += lat;
		__u32 b = bucket(lat);
		__u64 *h = bpf_map_lookup_elem(&hist, &b);
		if (h)
			*h += 1;
	}
	return XDP_DROP;

foreign:
	c->foreign++;
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
