//! The XDP counting sink (sink engine `xdp`): `bpf/xdp_sink.c`, compiled by
//! build.rs and embedded here, attached to the sink's interface. It counts the
//! stamped frames in the kernel (per-CPU counters), records their one-way latency
//! (`bpf_ktime_get_ns() - stamp`, both CLOCK_MONOTONIC) into a per-CPU log-linear
//! histogram (32 buckets per power of two: ~3%), and drops them; frames without
//! the stamp are counted and passed to the stack. Like vsb's sink it runs in the
//! receiving CPU's softirq, so the sink costs the generator's CPU nothing:
//! userspace writes the trial's window into the `config` map before the trial and
//! sums the per-CPU maps after it ([`RxPort::end_trial`]), feeding each bucket's
//! representative value (its midpoint) with its count into the hdrhistogram the
//! reports use.
//!
//! Counting is the same as [`SinkCore::on_frame`]'s (stamp in `[t_start, t_end)`:
//! delivered; stamp >= t0: stamped; stamp in the future: bad; a stamped frame
//! behind the highest sequence number seen in its stream: reordered), except that
//! reordering is tracked per receiving CPU (a stream's frames arrive on the CPU
//! that runs the sink interface's NAPI; reordering between CPUs is not seen).
//! There is no ring that could overflow: the sink itself never drops (frames lost
//! before it show as loss).
//!
//! The program hangs off a BPF link owned by this process: dropping the sink (or
//! the process dying) detaches it.

use crate::bpfprog::{XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, attach_xdp, ifindex};
use crate::engine::{RxFrame, RxPort, SinkCore, Times};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

/// The compiled `bpf/xdp_sink.c` (ELF, with BTF), aligned for libelf.
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/xdp_sink.o")));

/// Sub-buckets per power of two (as `SUB_BITS` in the C program).
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const MAX_EXP: u32 = 39;
/// Buckets of the histogram map.
pub const NBUCKETS: u32 = (MAX_EXP - SUB_BITS + 2) * SUB as u32;

/// `struct sink_config` of the C program.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct SinkConfig {
    t0: u64,
    t_start: u64,
    t_end: u64,
}

/// Entries of the C program's `last_seq` map (stream ids 0..=256).
const STREAMS: u32 = 257;

/// `struct counters` of the C program (summed over CPUs).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub frames: u64,
    pub bytes: u64,
    pub magic: u64,
    pub foreign: u64,
    pub bad: u64,
    pub stamped: u64,
    pub delivered: u64,
    pub lat_sum: u64,
    pub reordered: u64,
}

/// The bucket of latency `v` ns (as `bucket()` in the C program).
pub fn bucket(v: u64) -> u32 {
    if v < SUB {
        return v as u32;
    }
    let e = 63 - v.leading_zeros();
    if e > MAX_EXP {
        return NBUCKETS - 1;
    }
    let sub = ((v >> (e - SUB_BITS)) & (SUB - 1)) as u32;
    (e - SUB_BITS + 1) * SUB as u32 + sub
}

/// The value recorded for bucket `b`: its midpoint (at least 1 ns).
pub fn bucket_value(b: u32) -> u64 {
    if u64::from(b) < SUB {
        return u64::from(b).max(1);
    }
    let e = b / SUB as u32 + SUB_BITS - 1;
    let sub = u64::from(b) % SUB;
    let shift = e - SUB_BITS;
    ((SUB + sub) << shift) + ((1u64 << shift) >> 1)
}

/// Possible CPUs (the per-CPU maps' value count): the highest number in
/// /sys/devices/system/cpu/possible ("0-3", "0,2-5") plus one.
fn possible_cpus() -> Result<usize, String> {
    let p = "/sys/devices/system/cpu/possible";
    let s = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
    parse_cpu_list(&s).ok_or_else(|| format!("{p}: cannot parse {s:?}"))
}

fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut max = None;
    for part in s.trim().split(',') {
        let last = part.rsplit('-').next()?;
        let n: usize = last.trim().parse().ok()?;
        max = max.max(Some(n));
    }
    max.map(|m| m + 1)
}

fn os_err(rc: i32) -> String {
    std::io::Error::from_raw_os_error(rc.saturating_abs()).to_string()
}

/// The loaded and attached sink program.
pub struct XdpSink {
    // Drop order: the link (detach), the announcement socket, then the object.
    link: Option<OwnedFd>,
    announce: Option<OwnedFd>,
    obj: NonNull<libxdp_sys::bpf_object>,
    cfg_fd: RawFd,
    cnt_fd: RawFd,
    hist_fd: RawFd,
    seq_fd: RawFd,
    ncpus: usize,
    ifname: String,
    pub mode: &'static str,
}

// SAFETY: the libbpf object is used only through `&self`/`&mut self` by the lane
// thread that owns the sink; libbpf keeps no thread-local state about it.
unsafe impl Send for XdpSink {}

impl XdpSink {
    /// Loads the program and attaches it to `ifname` (in the calling thread's
    /// namespace): driver mode, else generic (skb) mode.
    pub fn open(ifname: &str) -> Result<XdpSink, String> {
        let idx = ifindex(ifname)?;
        let ncpus = possible_cpus()?;
        let buf: &'static [u8] = &OBJECT.0;
        // SAFETY: a static ELF image that outlives the object; opts may be null.
        let obj = unsafe {
            libxdp_sys::bpf_object__open_mem(buf.as_ptr().cast(), buf.len(), std::ptr::null())
        };
        let obj = NonNull::new(obj).ok_or_else(|| {
            format!(
                "opening the sink's BPF object: {}",
                std::io::Error::last_os_error()
            )
        })?;
        let close = |e: String| {
            // SAFETY: obj came from bpf_object__open_mem and is closed exactly once.
            unsafe { libxdp_sys::bpf_object__close(obj.as_ptr()) };
            e
        };
        // SAFETY: obj is a valid, opened object.
        let rc = unsafe { libxdp_sys::bpf_object__load(obj.as_ptr()) };
        if rc != 0 {
            return Err(close(format!(
                "loading the XDP sink (verifier, or missing CAP_BPF): {}",
                os_err(rc)
            )));
        }
        let map = |name: &std::ffi::CStr| -> Result<RawFd, String> {
            // SAFETY: valid loaded object and NUL-terminated name.
            let fd = unsafe {
                let m = libxdp_sys::bpf_object__find_map_by_name(obj.as_ptr(), name.as_ptr());
                if m.is_null() {
                    -1
                } else {
                    libxdp_sys::bpf_map__fd(m)
                }
            };
            if fd < 0 {
                Err(format!("the sink's BPF object has no map {name:?}"))
            } else {
                Ok(fd)
            }
        };
        let fds = (|| {
            Ok::<_, String>((
                map(c"config")?,
                map(c"counters")?,
                map(c"hist")?,
                map(c"last_seq")?,
            ))
        })();
        let (cfg_fd, cnt_fd, hist_fd, seq_fd) = fds.map_err(close)?;
        // SAFETY: valid object and NUL-terminated name.
        let prog_fd = unsafe {
            let p = libxdp_sys::bpf_object__find_program_by_name(
                obj.as_ptr(),
                c"vsbench_xsink".as_ptr(),
            );
            if p.is_null() {
                -1
            } else {
                libxdp_sys::bpf_program__fd(p)
            }
        };
        if prog_fd < 0 {
            return Err(close("the sink's BPF object has no program".into()));
        }
        // SAFETY: the object owns prog_fd and outlives this borrow; attach_xdp only
        // reads the descriptor, so wrap it without taking ownership.
        let prog = std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(prog_fd) });
        let (link, mode) = attach_xdp(
            &prog,
            idx,
            &[(XDP_FLAGS_DRV_MODE, "drv"), (XDP_FLAGS_SKB_MODE, "skb")],
        )
        .map_err(|e| close(format!("attaching the XDP sink to {ifname}: {e}")))?;
        let s = XdpSink {
            link: Some(link),
            announce: crate::packet::packet_socket(ifname, 0).ok(),
            obj,
            cfg_fd,
            cnt_fd,
            hist_fd,
            seq_fd,
            ncpus,
            ifname: ifname.to_string(),
            mode,
        };
        Ok(s)
    }

    fn update(&self, fd: RawFd, key: u32, val: &[u8]) -> Result<(), String> {
        // SAFETY: key is a live u32; `val` has the map's value size (per-CPU maps:
        // one slot per possible CPU).
        let rc = unsafe {
            libxdp_sys::bpf_map_update_elem(fd, (&key as *const u32).cast(), val.as_ptr().cast(), 0)
        };
        if rc < 0 {
            Err(format!("XDP sink map update: {}", os_err(rc)))
        } else {
            Ok(())
        }
    }

    fn lookup(&self, fd: RawFd, key: u32, val: &mut [u64]) -> Result<(), String> {
        // SAFETY: key is a live u32; `val` holds the map's value size for all CPUs.
        let rc = unsafe {
            libxdp_sys::bpf_map_lookup_elem(
                fd,
                (&key as *const u32).cast(),
                val.as_mut_ptr().cast(),
            )
        };
        if rc < 0 {
            Err(format!("XDP sink map lookup: {}", os_err(rc)))
        } else {
            Ok(())
        }
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, String> {
        const N: usize = size_of::<Counters>() / 8;
        let mut v = vec![0u64; N * self.ncpus];
        self.lookup(self.cnt_fd, 0, &mut v)?;
        let mut s = [0u64; N];
        for cpu in v.chunks_exact(N) {
            for (a, b) in s.iter_mut().zip(cpu) {
                *a = a.wrapping_add(*b);
            }
        }
        Ok(Counters {
            frames: s[0],
            bytes: s[1],
            magic: s[2],
            foreign: s[3],
            bad: s[4],
            stamped: s[5],
            delivered: s[6],
            lat_sum: s[7],
            reordered: s[8],
        })
    }

    /// Histogram counts per bucket, summed over CPUs (non-empty buckets only).
    pub fn histogram(&self) -> Result<Vec<(u32, u64)>, String> {
        let mut v = vec![0u64; self.ncpus];
        let mut out = vec![];
        for b in 0..NBUCKETS {
            self.lookup(self.hist_fd, b, &mut v)?;
            let n: u64 = v.iter().fold(0u64, |a, x| a.wrapping_add(*x));
            if n > 0 {
                out.push((b, n));
            }
        }
        Ok(out)
    }

    /// Zeroes the counters and the histogram and sets the window.
    pub fn reset(&mut self, times: &Times) -> Result<(), String> {
        let zeros = vec![0u8; size_of::<Counters>() * self.ncpus];
        self.update(self.cnt_fd, 0, &zeros)?;
        let zeros = vec![0u8; 8 * self.ncpus];
        for b in 0..NBUCKETS {
            self.update(self.hist_fd, b, &zeros)?;
        }
        for st in 0..STREAMS {
            self.update(self.seq_fd, st, &zeros)?;
        }
        let c = SinkConfig {
            t0: times.t0,
            t_start: times.t_start,
            t_end: times.t_end,
        };
        // SAFETY: SinkConfig is repr(C) plain data of 24 bytes, no padding.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&c as *const SinkConfig).cast::<u8>(),
                size_of::<SinkConfig>(),
            )
        };
        self.update(self.cfg_fd, 0, bytes)
    }
}

impl RxPort for XdpSink {
    fn describe(&self) -> String {
        format!("xdp counting sink ({} mode) on {}", self.mode, self.ifname)
    }

    fn poll(&mut self, _f: &mut dyn FnMut(RxFrame<'_>)) -> usize {
        // Frames never reach userspace: the program counts and drops them.
        0
    }

    fn announce(&mut self, frame: &[u8]) {
        if let Some(fd) = &self.announce {
            for _ in 0..3 {
                // SAFETY: send reads `frame.len()` bytes from a live slice.
                unsafe {
                    libc::send(
                        fd.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
            }
        }
    }

    fn kernel_drops(&self) -> u64 {
        // No ring to overflow.
        0
    }

    fn counts_in_kernel(&self) -> bool {
        true
    }

    fn begin_trial(&mut self, times: &Times) -> Result<(), String> {
        self.reset(times)
    }

    fn end_trial(&mut self, sink: &mut SinkCore) -> Result<(), String> {
        let c = self.counters()?;
        sink.frames += c.frames;
        sink.foreign += c.foreign;
        sink.bad += c.bad;
        sink.stamped += c.stamped;
        sink.delivered += c.delivered;
        sink.reordered += c.reordered;
        for (b, n) in self.histogram()? {
            let _ = sink.hist.record_n(bucket_value(b), n);
        }
        Ok(())
    }
}

impl Drop for XdpSink {
    fn drop(&mut self) {
        // Closing the link detaches the program; the object (maps, program) goes
        // last.
        self.link.take();
        self.announce.take();
        // SAFETY: obj came from bpf_object__open_mem and is closed exactly once.
        unsafe { libxdp_sys::bpf_object__close(self.obj.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_possible_cpus() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0,2-5"), Some(6));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn buckets_are_log_linear_within_3_percent() {
        for v in (1u64..2_000_000)
            .step_by(7)
            .chain([1u64 << 39, (1 << 40) - 1])
        {
            let b = bucket(v);
            assert!(b < NBUCKETS, "{v} -> {b}");
            let r = bucket_value(b);
            let err = (r as f64 - v as f64).abs() / v as f64;
            assert!(err <= 1.0 / 32.0, "{v} -> bucket {b} -> {r} ({err})");
        }
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(31), 31);
        assert_eq!(bucket(32), 32);
        assert_eq!(bucket_value(32), 32);
        assert_eq!(bucket(1 << 41), NBUCKETS - 1);
        // Monotonic.
        let mut last = 0;
        for v in 1..100_000u64 {
            let b = bucket(v);
            assert!(b >= last);
            last = b;
        }
    }
}
