//! Per-worker frame buffers.
//!
//! Every poll worker owns one [`FramePool`]: `count` frames of [`FRAME_SIZE`] bytes in
//! one contiguous region. When the worker can use AF_XDP the region *is* the worker's
//! UMEM, registered with the kernel, so every AF_XDP socket of the worker shares it and
//! forwarding between two of its ports moves a frame index, never the bytes. Without
//! AF_XDP (tests without root, AF_PACKET-only hosts) the region is plain memory with
//! the same layout, so the rest of the worker does not care.
//!
//! A frame's packet data always starts [`HEADROOM`] bytes into the frame: that is
//! where the kernel puts received data in an aligned UMEM (XDP_PACKET_HEADROOM), and
//! keeping it fixed lets a [`Frame`] be just an index and a length.
//!
//! `unsafe` stays in this module: the pool hands out slices only for frames it owns
//! (not lent to a kernel ring), and only through `&self`/`&mut self` of the one worker
//! thread that owns the pool.

use std::num::NonZeroU32;
use std::ptr::NonNull;
use xsk_rs::config::{FrameSize, QueueSize, UmemConfig};
use xsk_rs::{FrameDesc, Umem};

/// Bytes per frame (AF_XDP aligned mode wants a power of two: 2048 or 4096).
pub const FRAME_SIZE: usize = 2048;
/// Bytes before the packet data in each frame (XDP_PACKET_HEADROOM).
pub const HEADROOM: usize = 256;
/// Largest frame a buffer holds: 1792 bytes, enough for a 1500-byte MTU plus
/// Ethernet, two VLAN tags and room for a VXLAN header later.
pub const MAX_FRAME_LEN: usize = FRAME_SIZE - HEADROOM;

/// A frame owned by the worker: index of its buffer in the pool and data length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub idx: u32,
    pub len: u32,
}

/// Who holds a frame that is not free: the worker itself, or a port's kernel ring.
const HELD_BY_WORKER: u32 = 0;

enum Backing {
    /// Plain memory; `base` points into the boxed slice.
    Heap(#[allow(dead_code)] Box<[u8]>),
    /// Registered UMEM; `templates[i]` is the kernel descriptor of frame `i`.
    /// `netns`: identity of the network namespace the UMEM's socket was made in.
    Umem {
        umem: Umem,
        templates: Vec<FrameDesc>,
        netns: (u64, u64),
    },
}

/// A pool's UMEM and the namespace it was registered in (see [`FramePool::netns`]).
#[derive(Debug, Clone)]
pub struct UmemHandle {
    pub umem: Umem,
    pub netns: (u64, u64),
}

/// Anything AF_XDP sockets can be bound through: the pool, or a handle to its UMEM.
pub trait AsUmem {
    fn umem_handle(&self) -> Option<UmemHandle>;
}

impl AsUmem for FramePool {
    fn umem_handle(&self) -> Option<UmemHandle> {
        FramePool::umem_handle(self)
    }
}

impl AsUmem for UmemHandle {
    fn umem_handle(&self) -> Option<UmemHandle> {
        Some(self.clone())
    }
}

pub struct FramePool {
    base: NonNull<u8>,
    count: u32,
    free: Vec<u32>,
    /// For each frame: [`HELD_BY_WORKER`], or `port_no + 1` while a port's kernel ring
    /// (fill or tx) holds it. Lets a removed port's frames be reclaimed.
    holder: Vec<u32>,
    backing: Backing,
}

// SAFETY: the region is owned by the pool (boxed slice or UMEM mapping) and only
// accessed through it; moving the pool to another thread moves that ownership.
unsafe impl Send for FramePool {}

impl FramePool {
    /// A pool in plain memory (no AF_XDP possible).
    pub fn heap(count: u32) -> FramePool {
        let mut mem = vec![0u8; count as usize * FRAME_SIZE].into_boxed_slice();
        let base = NonNull::new(mem.as_mut_ptr()).unwrap_or(NonNull::dangling());
        FramePool::with_backing(base, count, Backing::Heap(mem))
    }

    /// A pool registered as an AF_XDP UMEM (needs CAP_NET_RAW and AF_XDP support).
    ///
    /// Create it in the network namespace of the interfaces its ports will use: the
    /// UMEM is an AF_XDP socket of the calling thread's namespace, and libxdp binds
    /// the first port's socket through that very descriptor, where interface indexes
    /// are looked up in *its* namespace (see [`FramePool::netns`]).
    pub fn umem(count: u32) -> Result<FramePool, String> {
        let netns = crate::port::netdev::current_netns_id()
            .map_err(|e| format!("own network namespace: {e}"))?;
        let frames = NonZeroU32::new(count).ok_or("pool needs at least one frame")?;
        let frame_size = FrameSize::new(FRAME_SIZE as u32).map_err(|e| e.to_string())?;
        let ring = QueueSize::new(4096).map_err(|e| e.to_string())?;
        let config = UmemConfig::builder()
            .frame_size(frame_size)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .frame_headroom(0)
            .build()
            .map_err(|e| e.to_string())?;
        let (umem, mut templates) = Umem::new(config, frames, false).map_err(|e| e.to_string())?;
        let first = templates.first_mut().ok_or("UMEM without frames")?;
        if first.addr() != HEADROOM {
            return Err(format!("unexpected UMEM layout: data at {}", first.addr()));
        }
        // SAFETY: frame 0 is ours (nothing was handed to the kernel yet); the data
        // pointer minus the frame's offset is the start of the mapping.
        let base = unsafe {
            let mut data = umem.data_mut(first);
            data.contents_mut().as_mut_ptr().sub(first.addr())
        };
        let base = NonNull::new(base).ok_or("UMEM mapping at null")?;
        Ok(FramePool::with_backing(
            base,
            count,
            Backing::Umem {
                umem,
                templates,
                netns,
            },
        ))
    }

    fn with_backing(base: NonNull<u8>, count: u32, backing: Backing) -> FramePool {
        FramePool {
            base,
            count,
            free: (0..count).rev().collect(),
            holder: vec![HELD_BY_WORKER; count as usize],
            backing,
        }
    }

    /// Number of frames in the pool.
    pub fn capacity(&self) -> u32 {
        self.count
    }

    /// Frames not in use.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// The UMEM, when the pool is one (AF_XDP sockets of this worker bind to it).
    pub fn as_umem(&self) -> Option<&Umem> {
        match &self.backing {
            Backing::Umem { umem, .. } => Some(umem),
            Backing::Heap(_) => None,
        }
    }

    /// What the control thread needs to bind AF_XDP sockets to this pool's UMEM
    /// while the pool itself lives on the worker thread.
    pub fn umem_handle(&self) -> Option<UmemHandle> {
        match &self.backing {
            Backing::Umem { umem, netns, .. } => Some(UmemHandle {
                umem: umem.clone(),
                netns: *netns,
            }),
            Backing::Heap(_) => None,
        }
    }

    /// For a UMEM pool, the network namespace (nsfs device and inode) it was created
    /// in; AF_XDP ports can only be opened on interfaces of that namespace.
    pub fn netns(&self) -> Option<(u64, u64)> {
        match &self.backing {
            Backing::Umem { netns, .. } => Some(*netns),
            Backing::Heap(_) => None,
        }
    }

    /// Takes a free frame (length 0).
    #[inline]
    pub fn alloc(&mut self) -> Option<Frame> {
        self.free.pop().map(|idx| Frame { idx, len: 0 })
    }

    /// Returns a frame to the pool.
    #[inline]
    pub fn free(&mut self, frame: Frame) {
        debug_assert!(frame.idx < self.count);
        self.free.push(frame.idx);
    }

    /// Returns a batch of frames to the pool.
    #[inline]
    pub fn free_all(&mut self, frames: impl IntoIterator<Item = Frame>) {
        self.free.extend(frames.into_iter().map(|f| f.idx));
    }

    /// The packet bytes of a frame.
    #[inline]
    pub fn data(&self, frame: &Frame) -> &[u8] {
        let len = (frame.len as usize).min(MAX_FRAME_LEN);
        // SAFETY: idx < count (frames only come from this pool), the range lies inside
        // the frame, and the worker owns the frame (not in a kernel ring).
        unsafe { std::slice::from_raw_parts(self.data_ptr(frame.idx), len) }
    }

    /// The packet bytes of a frame, writable.
    #[inline]
    pub fn data_mut(&mut self, frame: &Frame) -> &mut [u8] {
        let len = (frame.len as usize).min(MAX_FRAME_LEN);
        // SAFETY: as in `data`; `&mut self` guarantees no other slice of the pool lives.
        unsafe { std::slice::from_raw_parts_mut(self.data_ptr(frame.idx), len) }
    }

    /// The whole data area of a frame (for receiving into it).
    #[inline]
    pub fn buffer_mut(&mut self, idx: u32) -> &mut [u8] {
        // SAFETY: as in `data_mut`.
        unsafe { std::slice::from_raw_parts_mut(self.data_ptr(idx), MAX_FRAME_LEN) }
    }

    /// Raw pointer to a frame's data area, for batched syscalls (recvmmsg/sendmmsg)
    /// that fill or read many frames at once.
    #[inline]
    pub fn data_ptr(&self, idx: u32) -> *mut u8 {
        assert!(
            idx < self.count,
            "frame {idx} outside pool of {}",
            self.count
        );
        // SAFETY: in bounds of the region by the assert above.
        unsafe { self.base.as_ptr().add(idx as usize * FRAME_SIZE + HEADROOM) }
    }

    /// Allocates a frame holding a copy of `bytes` (flooding, cross-worker hand-off,
    /// memory ports). `None` when the pool is empty or `bytes` is too long.
    #[inline]
    pub fn alloc_copy(&mut self, bytes: &[u8]) -> Option<Frame> {
        if bytes.len() > MAX_FRAME_LEN {
            return None;
        }
        let mut f = self.alloc()?;
        f.len = bytes.len() as u32;
        self.data_mut(&f).copy_from_slice(bytes);
        Some(f)
    }

    /// Allocates a copy of another frame of this pool.
    #[inline]
    pub fn clone_frame(&mut self, src: &Frame) -> Option<Frame> {
        let mut f = self.alloc()?;
        f.len = src.len;
        let n = (src.len as usize).min(MAX_FRAME_LEN);
        // SAFETY: distinct frames (f was free, src is owned by the caller) never overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.data_ptr(src.idx), self.data_ptr(f.idx), n) };
        Some(f)
    }

    // ---- AF_XDP descriptor conversion and ring ownership -------------------------

    /// The kernel descriptor for a frame (UMEM pools only).
    #[inline]
    pub fn to_xdp_desc(&self, frame: &Frame) -> Option<FrameDesc> {
        match &self.backing {
            Backing::Umem {
                umem, templates, ..
            } => {
                let mut d = *templates.get(frame.idx as usize)?;
                // SAFETY: the descriptor is this UMEM's; the write only sets its length.
                unsafe { umem.data_mut(&mut d).cursor().set_pos(frame.len as usize) };
                Some(d)
            }
            Backing::Heap(_) => None,
        }
    }

    /// The frame a kernel descriptor (from an RX or completion ring) refers to.
    /// `None` for an address outside the pool or not where data is expected
    /// (the kernel never produces those for an aligned UMEM; counted as malformed).
    #[inline]
    pub fn from_xdp_desc(&self, desc: &FrameDesc) -> Option<Frame> {
        let addr = desc.addr();
        let idx = addr / FRAME_SIZE;
        if idx >= self.count as usize || addr % FRAME_SIZE != HEADROOM {
            return None;
        }
        Some(Frame {
            idx: idx as u32,
            len: desc.lengths().data() as u32,
        })
    }

    /// The frame index behind a completion/fill address (offset ignored).
    #[inline]
    pub fn idx_of_addr(&self, addr: usize) -> Option<u32> {
        let idx = addr / FRAME_SIZE;
        (idx < self.count as usize).then_some(idx as u32)
    }

    /// Records that a port's kernel ring now holds the frame.
    #[inline]
    pub fn lend(&mut self, idx: u32, port_no: u32) {
        self.holder[idx as usize] = port_no + 1;
    }

    /// Records that the frame came back from a port's kernel ring.
    #[inline]
    pub fn unlend(&mut self, idx: u32) {
        self.holder[idx as usize] = HELD_BY_WORKER;
    }

    /// After a port's socket is closed, the kernel keeps none of its frames: puts
    /// every frame still lent to it back on the free list. Returns how many.
    pub fn reclaim_port(&mut self, port_no: u32) -> usize {
        let tag = port_no + 1;
        let mut n = 0;
        for (i, h) in self.holder.iter_mut().enumerate() {
            if *h == tag {
                *h = HELD_BY_WORKER;
                self.free.push(i as u32);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_and_copy() {
        let mut p = FramePool::heap(4);
        assert_eq!(p.available(), 4);
        let a = p.alloc_copy(b"hello").expect("frame");
        assert_eq!(p.data(&a), b"hello");
        let b = p.clone_frame(&a).expect("frame");
        assert_ne!(a.idx, b.idx);
        p.data_mut(&b)[0] = b'j';
        assert_eq!(p.data(&a), b"hello");
        assert_eq!(p.data(&b), b"jello");
        p.free(a);
        p.free(b);
        assert_eq!(p.available(), 4);
        assert!(p.alloc_copy(&[0u8; MAX_FRAME_LEN + 1]).is_none());
    }

    #[test]
    fn exhausted_pool_says_none() {
        let mut p = FramePool::heap(2);
        let a = p.alloc().expect("1");
        let _b = p.alloc().expect("2");
        assert!(p.alloc().is_none());
        p.free(a);
        assert!(p.alloc().is_some());
    }

    #[test]
    fn reclaims_frames_lent_to_a_removed_port() {
        let mut p = FramePool::heap(8);
        let frames: Vec<_> = (0..5).filter_map(|_| p.alloc()).collect();
        for f in &frames[..3] {
            p.lend(f.idx, 7);
        }
        p.lend(frames[3].idx, 8);
        assert_eq!(p.reclaim_port(7), 3);
        assert_eq!(p.available(), 3 + 3);
        assert_eq!(p.reclaim_port(7), 0);
    }
}
