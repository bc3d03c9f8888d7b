//! AF_XDP sockets for the generator (TX only) and the sink (RX, with libxdp's
//! redirect program), through xsk-rs. Each socket has a UMEM of its own.
//!
//! How this differs from the switch's ports (`vswitch/src/port/afxdp.rs`), and the
//! quirks that carry over:
//! - The generator binds with `XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD`: a TX-only socket
//!   needs no XDP program, so nothing is attached to the generator's interface.
//! - The sink lets libxdp attach its default program (redirect to the socket by
//!   queue) in driver mode, falling back to skb mode. Without a bpffs libxdp loads
//!   that one program directly, without its dispatcher; either way, deleting the
//!   socket detaches it. The teardown runs in the socket's network namespace (the
//!   lane thread switches back there): libxdp detaches by interface index in the
//!   calling thread's namespace.
//! - Zero-copy is tried first only when asked (`zero_copy = true`); veth refuses it
//!   (EOPNOTSUPP) and copy mode is used. The mode the kernel actually chose is read
//!   back with `XDP_OPTIONS`.
//! - Sockets use `XDP_USE_NEED_WAKEUP`. In copy mode the kernel transmits only
//!   inside `sendto`, so the generator kicks once per batch; the per-call budget is
//!   raised (`XDP_MAX_TX_SKB_BUDGET`, Linux 6.17+) so one kick sends the batch.
//! - A socket on a queue that was just closed may see EBUSY for a moment: creation
//!   is retried for up to 2 s.
//!
//! All `unsafe` of the tool's AF_XDP use is in this module.

use crate::engine::{GenCore, RxFrame, RxPort, TxPort};
use std::io;
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::time::{Duration, Instant};
use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// Bytes per UMEM frame.
pub const FRAME_SIZE: usize = 2048;
/// Frames per UMEM (8 MiB).
pub const FRAMES: u32 = 4096;
/// TX and RX ring entries.
pub const RING: u32 = 2048;
/// Frames of the sink's UMEM kept for sending the MAC announcement.
const SINK_TX_FRAMES: u32 = 8;
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// The UMEM's memory as frames, for writing packets into frames we own.
struct Region {
    base: NonNull<u8>,
    frames: u32,
    /// Offset of packet data in a frame (XDP_PACKET_HEADROOM).
    data_off: usize,
}

// SAFETY: the region points into the UMEM mapping that the owning struct keeps
// alive (the `Umem` field); moving it to another thread moves that ownership.
unsafe impl Send for Region {}

impl Region {
    fn new(umem: &Umem, descs: &mut [FrameDesc], frames: u32) -> io::Result<Region> {
        let first = descs
            .first_mut()
            .ok_or_else(|| io::Error::other("UMEM without frames"))?;
        let data_off = first.addr();
        // SAFETY: frame 0 is ours (nothing was handed to the kernel yet); its data
        // pointer minus its offset is the start of the mapping.
        let base = unsafe {
            let mut d = umem.data_mut(first);
            d.contents_mut().as_mut_ptr().sub(data_off)
        };
        let base = NonNull::new(base).ok_or_else(|| io::Error::other("UMEM mapped at null"))?;
        for (i, d) in descs.iter().enumerate() {
            if d.addr() != i * FRAME_SIZE + data_off {
                return Err(io::Error::other(format!(
                    "unexpected UMEM layout: frame {i} at {}",
                    d.addr()
                )));
            }
        }
        Ok(Region {
            base,
            frames,
            data_off,
        })
    }

    /// The data area of frame `idx` (the caller owns the frame: it is in no ring).
    #[inline]
    fn frame_mut(&mut self, idx: u32) -> &mut [u8] {
        assert!(idx < self.frames, "frame {idx} outside the UMEM");
        // SAFETY: in bounds by the assert; `&mut self` and the caller's ownership of
        // the frame (not lent to the kernel) mean nobody else touches these bytes.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base
                    .as_ptr()
                    .add(idx as usize * FRAME_SIZE + self.data_off),
                FRAME_SIZE - self.data_off,
            )
        }
    }

    /// The received bytes a descriptor names (`addr` is where the data starts).
    #[inline]
    fn rx_bytes(&self, addr: usize, len: usize) -> Option<&[u8]> {
        let idx = addr / FRAME_SIZE;
        let start = addr % FRAME_SIZE;
        if idx >= self.frames as usize || start + len > FRAME_SIZE {
            return None;
        }
        // SAFETY: in bounds (checked); the frame came back from the RX ring, so the
        // kernel is done writing it until we put it on the fill ring again.
        Some(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(addr), len) })
    }

    /// Reads and clears the 8 bytes of XDP metadata in front of the data at
    /// `addr` (the receive time the sink program wrote; 0 if it wrote none). Clearing
    /// it keeps a stale time from a frame's previous use from ever being read.
    #[inline]
    fn take_meta(&mut self, addr: usize) -> Option<u64> {
        let idx = addr / FRAME_SIZE;
        if idx >= self.frames as usize || addr % FRAME_SIZE < 8 {
            return None;
        }
        // SAFETY: in bounds (checked above); the frame is back from the RX ring
        // and ours until it goes on the fill ring again.
        let m = unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(addr - 8), 8) };
        let v = u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]]);
        m.fill(0);
        (v != 0).then_some(v)
    }

    /// Hints the CPU to fetch the cache line holding the 8 bytes before `addr`
    /// (receive time) and the start of the frame.
    #[inline]
    fn prefetch(&self, addr: usize) {
        if addr < 8 || addr >= self.frames as usize * FRAME_SIZE {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults; the address is inside the mapping anyway.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch(self.base.as_ptr().add(addr - 8).cast::<i8>(), _MM_HINT_T0);
        }
    }

    fn idx_of(&self, addr: usize) -> Option<u32> {
        let i = addr / FRAME_SIZE;
        (i < self.frames as usize).then_some(i as u32)
    }
}

/// Bytes between XDP_PACKET_HEADROOM and a received frame's data in the sink's
/// UMEM: the 8-byte receive time the sink program puts in front of the data then
/// shares the data's first cache line, which is also where the stamp is (one
/// cross-CPU cache miss per frame instead of two).
const SINK_HEADROOM: u32 = 8;

fn new_umem(frames: u32, headroom: u32) -> io::Result<(Umem, Vec<FrameDesc>)> {
    let n = NonZeroU32::new(frames).ok_or_else(|| io::Error::other("no frames"))?;
    let fs = FrameSize::new(FRAME_SIZE as u32).map_err(io::Error::other)?;
    let q = QueueSize::new(FRAMES).map_err(io::Error::other)?;
    let cfg = UmemConfig::builder()
        .frame_size(fs)
        .fill_queue_size(q)
        .comp_queue_size(q)
        .frame_headroom(headroom)
        .build()
        .map_err(io::Error::other)?;
    Umem::new(cfg, n, false).map_err(|e| io::Error::other(explain(&e)))
}

fn explain(e: &dyn std::error::Error) -> String {
    match e.source() {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

fn os_errno(e: &dyn std::error::Error) -> Option<i32> {
    e.source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
}

type Queues = (TxQueue, RxQueue, Option<(FillQueue, CompQueue)>);

/// Creates the socket, retrying while the queue is still busy from a socket that
/// was just closed.
fn create(cfg: SocketConfig, umem: &Umem, ifname: &str, queue: u32) -> Result<Queues, String> {
    let iface: Interface = ifname
        .parse()
        .map_err(|_| format!("bad interface name {ifname:?}"))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        // SAFETY: each socket has a UMEM of its own, so (interface, queue) is never
        // bound twice through one UMEM (xsk-rs's condition for INHIBIT_PROG_LOAD).
        match unsafe { Socket::new(cfg, umem, &iface, queue) } {
            Ok(q) => return Ok(q),
            Err(e) if os_errno(&e) == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(explain(&e)),
        }
    }
}

fn kernel_zero_copy(fd: i32) -> Option<bool> {
    let mut flags: u32 = 0;
    let mut len = size_of::<u32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live local.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            (&mut flags as *mut u32).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
}

fn raise_tx_budget(fd: i32) {
    let budget: u32 = RING;
    // SAFETY: setsockopt reads 4 bytes from a live local; failure (older kernel)
    // leaves the default budget.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&budget as *const u32).cast(),
            size_of::<u32>() as libc::socklen_t,
        );
    }
}

/// Opens a socket trying zero-copy first when asked, then copy mode.
fn open(
    ifname: &str,
    queue: u32,
    zero_copy: bool,
    xdp: XdpFlags,
    libxdp: LibxdpFlags,
    umem: &Umem,
) -> Result<(Queues, bool), String> {
    let rx = QueueSize::new(RING).map_err(|e| e.to_string())?;
    let tx = QueueSize::new(RING).map_err(|e| e.to_string())?;
    let wake = BindFlags::XDP_USE_NEED_WAKEUP;
    let mut attempts = vec![];
    if zero_copy {
        attempts.push(BindFlags::XDP_ZEROCOPY.union(wake));
    }
    attempts.push(BindFlags::XDP_COPY.union(wake));
    let mut last = String::new();
    for bind in attempts {
        let cfg = SocketConfig::builder()
            .rx_queue_size(rx)
            .tx_queue_size(tx)
            .xdp_flags(xdp)
            .libxdp_flags(libxdp)
            .bind_flags(bind)
            .build();
        match create(cfg, umem, ifname, queue) {
            Ok(q) => {
                let zc = kernel_zero_copy(q.0.fd().as_raw_fd())
                    .unwrap_or(bind.contains(BindFlags::XDP_ZEROCOPY));
                return Ok((q, zc));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The generator's TX-only socket.
pub struct XskTx {
    // Field order is drop order: rings (the socket) before the UMEM.
    tx: TxQueue,
    cq: CompQueue,
    _rx: RxQueue,
    _fq: FillQueue,
    region: Region,
    _umem: Umem,
    /// Per frame, a descriptor with the frame's current length.
    descs: Vec<FrameDesc>,
    free: std::collections::VecDeque<u32>,
    scratch: Vec<FrameDesc>,
    /// Frames of the current layout (the rest stay unused).
    used: u32,
    zero_copy: bool,
    tx_errors: u64,
    gone: bool,
}

impl XskTx {
    /// Binds a TX socket to `ifname` queue `queue` (no XDP program is attached).
    pub fn open(ifname: &str, queue: u32, zero_copy: bool) -> Result<XskTx, String> {
        let (umem, mut descs) = new_umem(FRAMES, 0).map_err(|e| format!("UMEM: {e}"))?;
        let region = Region::new(&umem, &mut descs, FRAMES).map_err(|e| e.to_string())?;
        let ((tx, rx, fqcq), zc) = open(
            ifname,
            queue,
            zero_copy,
            XdpFlags::empty(),
            LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD,
            &umem,
        )?;
        let (fq, cq) = fqcq.ok_or("libxdp returned no fill/completion rings")?;
        if !zc {
            raise_tx_budget(tx.fd().as_raw_fd());
        }
        Ok(XskTx {
            tx,
            cq,
            _rx: rx,
            _fq: fq,
            region,
            _umem: umem,
            descs,
            free: (0..FRAMES).collect(),
            used: FRAMES,
            scratch: vec![FrameDesc::default(); RING as usize],
            zero_copy: zc,
            tx_errors: 0,
            gone: false,
        })
    }
}

impl TxPort for XskTx {
    fn describe(&self) -> String {
        if self.zero_copy {
            "afxdp (zero-copy)".into()
        } else {
            "afxdp (copy)".into()
        }
    }

    fn frames(&self) -> u32 {
        FRAMES
    }

    fn layout(&mut self, core: &GenCore) {
        // Only between trials, when every frame is back (see `drain`).
        for idx in 0..FRAMES {
            let len = core.build_frame(idx, self.region.frame_mut(idx));
            let mut d = self.descs[idx as usize];
            // SAFETY: the descriptor is this UMEM's; the call only sets its length.
            unsafe { self._umem.data_mut(&mut d).cursor().set_pos(len) };
            self.descs[idx as usize] = d;
        }
        self.used = core.frames_used().min(FRAMES);
        self.free = (0..self.used).collect();
    }

    #[inline]
    fn reap(&mut self) {
        loop {
            // SAFETY: the completion ring only holds addresses of this UMEM; the
            // descriptors are copied into our scratch array.
            let n = unsafe { self.cq.consume(&mut self.scratch) };
            for d in &self.scratch[..n] {
                if let Some(i) = self.region.idx_of(d.addr()) {
                    self.free.push_back(i);
                }
            }
            if n < self.scratch.len() {
                break;
            }
        }
    }

    #[inline]
    fn pending(&mut self) -> usize {
        (RING - self.tx.nb_free_exact()) as usize
    }

    #[inline]
    fn send(&mut self, core: &mut GenCore, n: usize, ts: u64) -> usize {
        let n = n.min(self.free.len()).min(self.scratch.len());
        let n = n.min(self.tx.nb_free(n as u32) as usize);
        for i in 0..n {
            let Some(idx) = self.free.pop_front() else {
                break;
            };
            core.stamp(idx, self.region.frame_mut(idx), ts);
            self.scratch[i] = self.descs[idx as usize];
        }
        // SAFETY: the frames were free (in no ring), belong to this socket's UMEM
        // and are lent to the TX ring from now on.
        let done = unsafe { self.tx.produce(&self.scratch[..n]) };
        if done == 0 && n > 0 {
            // All-or-nothing and `nb_free` said there was room; should it refuse
            // anyway, the frames go back and their sequence numbers are reused.
            for d in self.scratch[..n].iter().rev() {
                if let Some(i) = self.region.idx_of(d.addr()) {
                    self.free.push_front(i);
                }
            }
            core.unsend(n);
            return 0;
        }
        done
    }

    #[inline]
    fn kick(&mut self) {
        // Only when descriptors wait: in copy mode the flag is always set, and an
        // empty `sendto` per loop would burn the generator's CPU at low rates.
        if self.gone || !self.tx.needs_wakeup() || self.tx.nb_free_exact() == RING {
            return;
        }
        // xsk-rs counts EAGAIN/EBUSY/ENOBUFS/ENETDOWN (budget spent, device busy)
        // as success.
        if let Err(e) = self.tx.wakeup() {
            match e.raw_os_error() {
                Some(libc::ENXIO) | Some(libc::ENODEV) => self.gone = true,
                _ => self.tx_errors += 1,
            }
        }
    }

    fn errors(&self) -> u64 {
        self.tx_errors
    }

    fn drain(&mut self, timeout: Duration) {
        // In copy mode every descriptor completes inside the `sendto` that sends
        // it, so this returns at once unless the interface went away.
        let deadline = Instant::now() + timeout;
        while self.free.len() < self.used as usize && Instant::now() < deadline {
            self.kick();
            self.reap();
            std::thread::yield_now();
        }
    }
}

/// The sink's socket: libxdp's program on the interface redirects queue `queue`
/// to it.
pub struct XskRx {
    /// Our timestamping program (first field: detached before the socket goes).
    prog: Option<std::sync::Arc<crate::bpfprog::SinkProg>>,
    rx: RxQueue,
    fq: FillQueue,
    tx: TxQueue,
    _cq: CompQueue,
    region: Region,
    _umem: Umem,
    descs: Vec<FrameDesc>,
    scratch: Vec<FrameDesc>,
    mode: String,
}

impl XskRx {
    /// Binds an RX socket on `ifname` queue `queue`. Preferred: our own XDP
    /// program ([`crate::bpfprog::SinkProg`]) redirects to it and stamps the
    /// receive time; if that program cannot be attached, libxdp's default
    /// program is used (driver mode, else skb mode) and frames are timed when
    /// read.
    pub fn open(ifname: &str, queue: u32, zero_copy: bool) -> Result<XskRx, String> {
        let (umem, mut descs) =
            new_umem(FRAMES, SINK_HEADROOM).map_err(|e| format!("UMEM: {e}"))?;
        let region = Region::new(&umem, &mut descs, FRAMES).map_err(|e| e.to_string())?;
        let mut errs = vec![];
        // 1. Our program: a socket without libxdp's program, then the XSKMAP entry.
        match open(
            ifname,
            queue,
            zero_copy,
            XdpFlags::empty(),
            LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD,
            &umem,
        ) {
            Ok(((tx, rx, fqcq), zc)) => {
                let fd = rx.fd().as_raw_fd();
                let prog = crate::bpfprog::SinkProg::get(ifname)
                    .and_then(|p| p.add_socket(queue, fd).map(|()| p));
                match (prog, fqcq) {
                    (Ok(p), Some((fq, cq))) => {
                        let mode = format!(
                            "afxdp ({}, {} mode, XDP receive timestamps)",
                            if zc { "zero-copy" } else { "copy" },
                            p.mode
                        );
                        let mut s = XskRx {
                            prog: Some(p),
                            rx,
                            fq,
                            tx,
                            _cq: cq,
                            region,
                            _umem: umem,
                            descs,
                            scratch: vec![FrameDesc::default(); 256],
                            mode,
                        };
                        s.fill_all();
                        return Ok(s);
                    }
                    (Err(e), _) => errs.push(format!("own XDP program: {e}")),
                    (_, None) => errs.push("libxdp returned no fill/completion rings".into()),
                }
            }
            Err(e) => errs.push(format!("socket: {e}")),
        }
        // 2. libxdp's default program, on a fresh UMEM (libxdp cannot bind a new
        // first socket to a UMEM whose first socket was closed).
        let (umem, mut descs) =
            new_umem(FRAMES, SINK_HEADROOM).map_err(|e| format!("UMEM: {e}"))?;
        let region = Region::new(&umem, &mut descs, FRAMES).map_err(|e| e.to_string())?;
        for (xdp, what) in [
            (XdpFlags::XDP_FLAGS_DRV_MODE, "drv"),
            (XdpFlags::XDP_FLAGS_SKB_MODE, "skb"),
        ] {
            match open(ifname, queue, zero_copy, xdp, LibxdpFlags::empty(), &umem) {
                Ok(((tx, rx, fqcq), zc)) => {
                    let (fq, cq) = fqcq.ok_or("libxdp returned no fill/completion rings")?;
                    let mut s = XskRx {
                        prog: None,
                        rx,
                        fq,
                        tx,
                        _cq: cq,
                        region,
                        _umem: umem,
                        descs,
                        scratch: vec![FrameDesc::default(); 256],
                        mode: format!(
                            "afxdp ({}, {what} mode, libxdp program, timed when read: {})",
                            if zc { "zero-copy" } else { "copy" },
                            errs.join("; ")
                        ),
                    };
                    s.fill_all();
                    return Ok(s);
                }
                Err(e) => errs.push(format!("{what} mode: {e}")),
            }
        }
        Err(errs.join("; "))
    }

    fn fill_all(&mut self) {
        let n = (FRAMES - SINK_TX_FRAMES) as usize;
        let mut given = 0;
        while given < n {
            let k = (n - given).min(256);
            // SAFETY: frames not yet given to any ring, of this UMEM.
            let done = unsafe { self.fq.produce(&self.descs[given..given + k]) };
            if done == 0 {
                break;
            }
            given += done;
        }
    }
}

impl RxPort for XskRx {
    fn describe(&self) -> String {
        self.mode.clone()
    }

    #[inline]
    fn poll(&mut self, f: &mut dyn FnMut(RxFrame<'_>)) -> usize {
        // SAFETY: the RX ring hands out addresses of this UMEM; descriptors are
        // copied out and each is checked against the UMEM before use.
        let n = unsafe { self.rx.consume(&mut self.scratch) };
        if n == 0 {
            if self.fq.needs_wakeup() {
                let _ = self.fq.wakeup(self.rx.fd_mut(), 0);
            }
            return 0;
        }
        // The frames were written by another CPU: start fetching every frame's
        // first cache line before touching any, so the misses overlap.
        for d in &self.scratch[..n] {
            self.region.prefetch(d.addr());
        }
        for i in 0..n {
            let d = self.scratch[i];
            let rx_ns = if self.prog.is_some() {
                self.region.take_meta(d.addr())
            } else {
                None
            };
            if let Some(data) = self.region.rx_bytes(d.addr(), d.lengths().data()) {
                f(RxFrame { data, rx_ns });
            }
            if let Some(idx) = self.region.idx_of(d.addr()) {
                self.scratch[i] = self.descs[idx as usize];
            }
        }
        // SAFETY: the frames came back from the RX ring (we are done reading them)
        // and go straight back to the kernel for receiving.
        unsafe { self.fq.produce(&self.scratch[..n]) };
        n
    }

    fn announce(&mut self, frame: &[u8]) {
        for k in 0..3 {
            let idx = FRAMES - SINK_TX_FRAMES + k;
            let buf = self.region.frame_mut(idx);
            let len = frame.len().min(buf.len());
            buf[..len].copy_from_slice(&frame[..len]);
            let mut d = self.descs[idx as usize];
            // SAFETY: this UMEM's descriptor; only its length is set.
            unsafe { self._umem.data_mut(&mut d).cursor().set_pos(len) };
            // SAFETY: a reserved TX frame of this UMEM, used for nothing else.
            unsafe { self.tx.produce(&[d]) };
        }
        let _ = self.tx.wakeup();
    }

    fn kernel_drops(&self) -> u64 {
        self.rx
            .fd()
            .xdp_statistics()
            .map(|s| s.rx_dropped() + s.rx_ring_full())
            .unwrap_or(0)
    }
}

unsafe extern "C" {
    /// libbpf's logger setter (libxdp-sys links libbpf but has no binding for it).
    fn libbpf_set_print(f: *const libc::c_void) -> *const libc::c_void;
}

/// Silences libxdp's and libbpf's own messages on stderr (for example the
/// dispatcher fallback notes printed at every socket creation when the kernel
/// refuses libxdp's dispatcher); our errors carry the reasons that matter. Set
/// `VSWITCH_BENCH_DEBUG=1` to keep them.
pub fn quiet_libraries() {
    if std::env::var_os("VSWITCH_BENCH_DEBUG").is_some() {
        return;
    }
    // SAFETY: both setters only store the pointer; null means "do not print".
    unsafe {
        libxdp_sys::libxdp_set_print(None);
        libbpf_set_print(std::ptr::null());
    }
}
