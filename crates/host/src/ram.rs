//! RAM: one memfd of the machine's size, mapped once as a direct map.
//!
//! ```text
//!   memfd  | frame 0 | frame 1 | frame 2 | ... | frame n-1 |   (physical address = file offset)
//!             ▲ direct map (read-write, shared): copies, zeroing, allocator headers
//!             ▲ window pages mapped MAP_SHARED at a frame's offset: what programs load and store
//! ```
//!
//! The memfd is sparse: frames nobody touched cost nothing. Because every view is
//! `MAP_SHARED` over the same file, a store through a window is seen through the direct map
//! and through every other window mapping the same frame.
//!
//! # Unsafe
//! The direct map is one mapping of the memfd made in `new` and kept until the RAM is
//! dropped; every access through it is a raw copy within it (checked against its size), clear
//! of the allocator headers, the only references into it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use memkit_heap::DirectMapPageSource;
use memkit_phys::{HeaderMapping, LockedAllocator, MemoryArea};
use memkit_types::l4::{L4_EINVAL, L4_ENOMEM};
use memkit_types::{Frame, FrameCount, PAGE_SIZE, PhysAddr, PhysMemory, VirtAddr};

use crate::sys;

/// Why RAM could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RamError {
    /// The size is zero or not a multiple of 4 KiB.
    BadSize(u64),
    /// A syscall failed (its errno).
    Os(i32),
}

impl core::fmt::Display for RamError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RamError::BadSize(s) => write!(f, "RAM size {s:#x} is zero or not a multiple of 4 KiB"),
            RamError::Os(e) => write!(f, "cannot set up RAM: errno {e}"),
        }
    }
}

impl std::error::Error for RamError {}

impl RamError {
    /// The seed's code: `-L4_ENOMEM` (-12) for a failed syscall, `-L4_EINVAL` (-22) for a bad size.
    #[must_use]
    pub fn code(self) -> i32 {
        match self {
            RamError::BadSize(_) => -L4_EINVAL,
            RamError::Os(_) => -L4_ENOMEM,
        }
    }
}

/// The most header regions a [`HostHeaderMapping`] hands out (one per pool and memory area
/// in practice; a machine has at most eight pools).
pub const MAX_HEADER_REGIONS: usize = 64;

/// The machine's RAM: a memfd of `size` bytes and its direct map.
///
/// # Invariants
/// `base .. base + size` is a shared read-write mapping of the whole memfd, owned by this
/// value and released when it drops. The only Rust references into it are the frame
/// allocator's header words ([`HostHeaderMapping`]), recorded in `headers`; every
/// [`PhysMemory`] operation refuses (panics on) a range that touches one of them, so they
/// never alias a raw copy. Everything else goes through raw copies.
#[derive(Debug)]
pub struct HostRam {
    fd: OwnedFd,
    base: NonNull<u8>,
    size: u64,
    /// Whether the header mapping was handed out (it may be, once).
    headers_taken: AtomicBool,
    /// The header regions handed out: `(start, end)` physical addresses, the first
    /// `header_count` entries valid (published in order: an entry is written before the count
    /// that covers it).
    headers: [(AtomicU64, AtomicU64); MAX_HEADER_REGIONS],
    header_count: AtomicUsize,
}

// SAFETY: the direct map is plain shared memory reached only through raw copies (the header
// words excepted, which the PhysMemory operations refuse to touch); HostRam holds no
// thread-bound state, and concurrent raw copies to distinct frames are fine (callers only
// touch frames they own, per the PhysMemory contract).
unsafe impl Send for HostRam {}
// SAFETY: as for Send: every method takes &self and performs raw copies on owned frames.
unsafe impl Sync for HostRam {}

impl HostRam {
    /// Creates RAM of `size` bytes (physical addresses `0 .. size`), all zero.
    ///
    /// # Errors
    /// [`RamError::BadSize`] for a zero or unaligned size; [`RamError::Os`] when the memfd or
    /// its mapping cannot be made.
    pub fn new(size: u64) -> Result<Self, RamError> {
        if size == 0 || !size.is_multiple_of(PAGE_SIZE as u64) || usize::try_from(size).is_err() {
            return Err(RamError::BadSize(size));
        }
        let fd = rustix::fs::memfd_create("memkit-ram", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| RamError::Os(e.raw_os_error()))?;
        rustix::fs::ftruncate(&fd, size).map_err(|e| RamError::Os(e.raw_os_error()))?;
        let ptr = sys::map_shared(fd.as_fd(), size as usize, 0).map_err(|e| RamError::Os(e.raw_os_error()))?;
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(RamError::Os(libc::ENOMEM))?;
        Ok(HostRam {
            fd,
            base,
            size,
            headers_taken: AtomicBool::new(false),
            headers: [const { (AtomicU64::new(0), AtomicU64::new(0)) }; MAX_HEADER_REGIONS],
            header_count: AtomicUsize::new(0),
        })
    }

    /// Backs every frame with real memory now, and maps the whole direct map, as a machine's
    /// RAM exists before anyone uses it. Without it the memfd stays sparse and the kernel
    /// allocates each frame on its first touch (a kernel page fault inside memkit's faults).
    ///
    /// # Errors
    /// [`RamError::Os`] when the kernel cannot provide the memory.
    pub fn populate(&self) -> Result<(), RamError> {
        rustix::fs::fallocate(&self.fd, rustix::fs::FallocateFlags::empty(), 0, self.size)
            .map_err(|e| RamError::Os(e.raw_os_error()))?;
        sys::populate_write(self.base.as_ptr().cast(), self.size as usize).map_err(|e| RamError::Os(e.raw_os_error()))
    }

    /// The size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The number of frames.
    #[must_use]
    pub fn frames(&self) -> FrameCount {
        FrameCount::new(self.size / PAGE_SIZE as u64)
    }

    /// The memfd, for mapping frames into windows.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether `frame .. frame + count` lies inside this RAM.
    #[must_use]
    pub fn contains(&self, frame: Frame, count: FrameCount) -> bool {
        frame.number().checked_add(count.get()).is_some_and(|end| end <= self.frames().get())
    }

    /// A raw pointer to the direct mapping of `addr .. addr + len`: the header mapping the
    /// frame allocator keeps its metadata in, or any other raw view of physical memory.
    ///
    /// # Panics
    /// If the range is not inside this RAM.
    #[must_use]
    pub fn direct_map(&self, addr: PhysAddr, len: usize) -> NonNull<u8> {
        self.check(addr, len);
        // SAFETY: check() proved addr + len <= size, so the offset stays inside the mapping
        // that base points to.
        unsafe { self.base.add(addr.as_u64() as usize) }
    }

    fn check(&self, addr: PhysAddr, len: usize) {
        let end = addr.as_u64().checked_add(len as u64);
        assert!(end.is_some_and(|e| e <= self.size), "physical range {addr}+{len:#x} outside RAM of {:#x}", self.size);
    }

    /// Whether `addr .. addr + len` overlaps a header region the frame allocator holds as
    /// `&mut [u64]`.
    #[must_use]
    pub fn touches_headers(&self, addr: PhysAddr, len: usize) -> bool {
        let (start, end) = (addr.as_u64(), addr.as_u64().saturating_add(len as u64));
        let count = self.header_count.load(Ordering::Acquire);
        self.headers[..count].iter().any(|(s, e)| {
            let (s, e) = (s.load(Ordering::Relaxed), e.load(Ordering::Relaxed));
            start < e && s < end
        })
    }

    /// The direct map of `addr .. addr + len` for a [`PhysMemory`] operation: inside the RAM
    /// and clear of the allocator's headers.
    fn frame_bytes(&self, addr: PhysAddr, len: usize) -> NonNull<u8> {
        assert!(
            !self.touches_headers(addr, len),
            "physical range {addr}+{len:#x} overlaps the frame allocator's headers: not a frame the caller owns"
        );
        self.direct_map(addr, len)
    }
}

/// The frame allocator's view of its headers in this RAM: hands out each header region as
/// `&mut [u64]` words, once, in increasing address order.
///
/// # Invariants
/// Regions handed out are disjoint (each starts at or after the end of the previous one), and
/// only one mapping per RAM ever exists ([`HostRam::header_mapping`] refuses a second), so no
/// two `&mut` slices alias. Each region is recorded in the RAM before it is handed out, and
/// the RAM's [`PhysMemory`] operations refuse to touch it. At most [`MAX_HEADER_REGIONS`]
/// regions are handed out.
#[derive(Debug)]
pub struct HostHeaderMapping<'h> {
    ram: &'h HostRam,
    next: u64,
}

impl HostRam {
    /// The mapping through which [`memkit_phys::Pools::new`] places its headers in this RAM;
    /// `None` if it was handed out before (the headers must have one owner).
    #[must_use]
    pub fn header_mapping(&self) -> Option<HostHeaderMapping<'_>> {
        if self.headers_taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(HostHeaderMapping { ram: self, next: 0 })
    }
}

impl HostRam {
    /// A page source for the kernel heaps: frames of `pool` (an allocator over this RAM),
    /// reached through the direct map. `None` when the pool's memory is not inside this RAM.
    #[must_use]
    pub fn heap_page_source<'h, R: lock_api::RawMutex>(
        &'static self,
        pool: &'h LockedAllocator<'h, R>,
    ) -> Option<DirectMapPageSource<&'h LockedAllocator<'h, R>>> {
        if pool.area().end() > self.size {
            return None;
        }
        let direct_map = VirtAddr::try_new(self.base.as_ptr() as usize).ok()?;
        let end = PhysAddr::try_new(self.size).ok()?;
        // SAFETY: (1) the direct map covers every physical address below `size` for as long as
        // this 'static RAM lives; (2) the pool's frames lie below `size` (checked above);
        // (3) a frame the pool hands out is owned by its receiver alone: no PhysMemory
        // operation touches it, since the manager only touches frames it allocated itself.
        Some(unsafe { DirectMapPageSource::new(pool, direct_map, end) })
    }
}

impl<'h> HeaderMapping<'h> for HostHeaderMapping<'h> {
    fn map(&mut self, region: MemoryArea) -> Option<&'h mut [u64]> {
        let start = region.start.as_u64();
        let end = start.checked_add(region.size)?;
        if start < self.next || end > self.ram.size || !start.is_multiple_of(8) || !region.size.is_multiple_of(8) {
            return None;
        }
        let len = usize::try_from(region.size / 8).ok()?;
        let count = self.ram.header_count.load(Ordering::Acquire);
        if count >= MAX_HEADER_REGIONS {
            return None;
        }
        let ptr = self.ram.direct_map(region.start, region.size as usize).cast::<u64>();
        self.next = end;
        // Recorded before it is handed out: from here on, frame operations refuse it. Only
        // this mapping (one per RAM, `&mut self`) writes the table.
        self.ram.headers[count].0.store(start, Ordering::Relaxed);
        self.ram.headers[count].1.store(end, Ordering::Relaxed);
        self.ram.header_count.store(count + 1, Ordering::Release);
        // SAFETY: the words lie inside the direct map (direct_map checked the range) and are
        // 8-byte aligned (the mapping is page aligned and `start` a multiple of 8); they are
        // disjoint from every slice handed out before (start >= next) and this is the only
        // mapping of this RAM (header_mapping hands out one); the allocator never gives its
        // header frames to anyone, so nothing else reaches these bytes while 'h lasts.
        Some(unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), len) })
    }
}

/// The frame operations. Each one refuses, with a panic naming the range, a range outside the
/// RAM or touching the frame allocator's headers (no caller owns those frames), so no safe
/// call can alias the allocator's `&mut` header words.
impl PhysMemory for HostRam {
    fn zero(&self, frame: Frame, count: FrameCount) {
        let len = frame_len(count);
        let dst = self.frame_bytes(frame.start_address(), len);
        // SAFETY: frame_bytes checked the range lies in the mapping, clear of the headers (the
        // only references into it); raw memory.
        unsafe { dst.write_bytes(0, len) };
    }

    fn copy(&self, src: Frame, dst: Frame, count: FrameCount) {
        let len = frame_len(count);
        let s = self.frame_bytes(src.start_address(), len);
        let d = self.frame_bytes(dst.start_address(), len);
        // SAFETY: both ranges are inside the mapping and clear of the headers (checked); raw
        // memory, no references. `copy_from` is a memmove: overlapping runs (even `src ==
        // dst`, which a caller may pass despite the trait's words) are fine.
        unsafe { d.copy_from(s, len) };
    }

    fn read(&self, addr: PhysAddr, buf: &mut [u8]) {
        let s = self.frame_bytes(addr, buf.len());
        // SAFETY: the source is inside the mapping and clear of the headers (checked). `buf`
        // may itself lie in the direct map (a kernel-heap block does), so the copy is a
        // memmove.
        unsafe { s.copy_to(NonNull::from(&mut *buf).cast::<u8>(), buf.len()) };
    }

    fn write(&self, addr: PhysAddr, buf: &[u8]) {
        let d = self.frame_bytes(addr, buf.len());
        // SAFETY: the destination is inside the mapping and clear of the headers (checked);
        // `buf` may lie in the direct map too, so the copy is a memmove.
        unsafe { d.copy_from(NonNull::from(buf).cast::<u8>(), buf.len()) };
    }
}

/// The bytes of `count` frames; saturating, so that an absurd count fails the range check
/// instead of wrapping.
fn frame_len(count: FrameCount) -> usize {
    usize::try_from(count.get()).unwrap_or(usize::MAX).saturating_mul(PAGE_SIZE)
}

impl Drop for HostRam {
    fn drop(&mut self) {
        // SAFETY: base/size is the mapping made in new(); no reference into it exists and
        // HostRam is being dropped, so nothing can use it any more.
        unsafe { sys::release(self.base.as_ptr().cast(), self.size as usize) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_round_trip() {
        let ram = HostRam::new(16 * PAGE_SIZE as u64).unwrap();
        assert_eq!(ram.frames(), FrameCount::new(16));
        ram.write(PhysAddr::new(0xff0), &[7u8; 32]);
        let mut buf = [0u8; 40];
        ram.read(PhysAddr::new(0xfe8), &mut buf);
        assert_eq!(&buf[..8], &[0; 8]);
        assert_eq!(&buf[8..], &[7; 32]);
        ram.copy(Frame::from_number(1), Frame::from_number(5), FrameCount::new(1));
        ram.read(PhysAddr::new(0x5000), &mut buf[..1]);
        assert_eq!(buf[0], 7);
        ram.zero(Frame::from_number(1), FrameCount::new(1));
        ram.read(PhysAddr::new(0x1000), &mut buf[..1]);
        assert_eq!(buf[0], 0);
        assert_eq!(HostRam::new(100).unwrap_err(), RamError::BadSize(100));
        assert!(!ram.contains(Frame::from_number(15), FrameCount::new(2)));
    }

    #[test]
    fn a_copy_of_a_frame_onto_itself_keeps_its_bytes() {
        // `copy(f, f, 1)` used to break `copy_nonoverlapping`'s precondition.
        let ram = HostRam::new(4 * PAGE_SIZE as u64).unwrap();
        ram.write(PhysAddr::new(0x1000), b"same frame");
        ram.copy(Frame::from_number(1), Frame::from_number(1), FrameCount::new(1));
        let mut buf = [0u8; 10];
        ram.read(PhysAddr::new(0x1000), &mut buf);
        assert_eq!(&buf, b"same frame");
        // Overlapping runs move like memmove.
        ram.copy(Frame::from_number(1), Frame::from_number(2), FrameCount::new(2));
        ram.read(PhysAddr::new(0x2000), &mut buf);
        assert_eq!(&buf, b"same frame");
    }

    fn with_headers() -> (&'static HostRam, &'static mut [u64]) {
        let ram: &'static HostRam = Box::leak(Box::new(HostRam::new(8 * PAGE_SIZE as u64).unwrap()));
        let mut mapping = ram.header_mapping().unwrap();
        let words = mapping.map(MemoryArea::new(PhysAddr::new(0x2000), PAGE_SIZE as u64)).unwrap();
        (ram, words)
    }

    #[test]
    fn frame_operations_refuse_the_allocators_headers() {
        let (ram, words) = with_headers();
        words[0] = 0x1234;
        assert!(ram.touches_headers(PhysAddr::new(0x2ff8), 16));
        assert!(!ram.touches_headers(PhysAddr::new(0x1000), PAGE_SIZE));
        assert!(!ram.touches_headers(PhysAddr::new(0x3000), PAGE_SIZE));
        let attempts: [&(dyn Fn() + std::panic::RefUnwindSafe); 5] = [
            &|| ram.write(PhysAddr::new(0x2000), &[0xff; 8]),
            &|| ram.write(PhysAddr::new(0x1ffc), &[0xff; 8]),
            &|| ram.zero(Frame::from_number(1), FrameCount::new(2)),
            &|| ram.copy(Frame::from_number(4), Frame::from_number(2), FrameCount::new(1)),
            &|| ram.read(PhysAddr::new(0x2000), &mut [0u8; 8]),
        ];
        for attempt in attempts {
            assert!(std::panic::catch_unwind(attempt).is_err());
        }
        assert_eq!(words[0], 0x1234, "a refused operation wrote the header");
        // Frames around it still work.
        ram.write(PhysAddr::new(0x1ff8), &[1; 8]);
        ram.zero(Frame::from_number(3), FrameCount::new(1));
    }

    #[test]
    fn a_second_header_mapping_is_refused() {
        let (ram, _) = with_headers();
        assert!(ram.header_mapping().is_none());
    }
}
