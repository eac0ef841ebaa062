//! The nested path: what a call of the malloc family does when its thread is inside the
//! family already (a signal handler that allocates while the thread it interrupted is in
//! `malloc`). The heap's locks may be held by the interrupted code, so this path takes
//! none: it uses only atomics and `mmap`/`munmap`, which are async-signal-safe.
//!
//! - An allocation is its own anonymous mapping: a 16-byte header (the mapping's start and
//!   length) before the block, the block at the first suitably aligned address after it;
//!   the block is recorded in [`BLOCKS`] (a fixed table of atomics).
//! - Freeing a heap block is deferred: its address goes into [`DEFERRED`], and the next
//!   call that enters the heap frees it there. Freeing a nested block unmaps it.
//!
//! Both tables are fixed: when one is full, a nested allocation fails (`ENOMEM`) and a
//! deferred free is dropped (the block leaks; nothing is corrupted).
//!
//! # Unsafe
//! `mmap`/`munmap` of mappings this module made, and the header words inside them; a block
//! is unmapped only by the caller that removed it from [`BLOCKS`], so once.

use core::sync::atomic::{AtomicUsize, Ordering::*};

/// Nested blocks live at once at most.
pub(crate) const MAX_BLOCKS: usize = 256;
/// Deferred frees waiting at once at most.
pub(crate) const MAX_DEFERRED: usize = 1024;
const HEADER: usize = 16;
const PAGE: usize = 4096;

/// The live nested blocks' addresses (0: a free entry).
static BLOCKS: [AtomicUsize; MAX_BLOCKS] = [const { AtomicUsize::new(0) }; MAX_BLOCKS];
/// Heap blocks whose free waits for a call that may enter the heap (0: a free entry).
static DEFERRED: [AtomicUsize; MAX_DEFERRED] = [const { AtomicUsize::new(0) }; MAX_DEFERRED];
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// Deferred frees dropped because the table was full.
static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// A block of `size` bytes aligned to `align` (a power of two), in a mapping of its own.
/// `None` when the size overflows, the OS refuses or the table is full.
pub(crate) fn allocate(size: usize, align: usize) -> Option<*mut u8> {
    let align = align.max(HEADER);
    let len = size.checked_add(align)?.checked_add(HEADER)?.checked_next_multiple_of(PAGE)?;
    let slot = BLOCKS.iter().position(|b| b.load(Relaxed) == 0)?;
    // SAFETY: a fresh private anonymous mapping at an address the kernel picks.
    let base = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    let base = base.cast::<u8>();
    let offset = (base.addr() + HEADER).next_multiple_of(align) - base.addr();
    let block = base.wrapping_add(offset);
    let header = block.wrapping_sub(HEADER).cast::<usize>();
    // SAFETY: the header's two words lie inside the fresh mapping (offset >= HEADER), aligned
    // to 16.
    unsafe { header.write(base.expose_provenance()) };
    // SAFETY: as above, the second word.
    unsafe { header.wrapping_add(1).write(len) };
    // Claim an entry; another nested call may have taken the one found first.
    let addr = block.expose_provenance();
    let claimed = BLOCKS
        .iter()
        .skip(slot)
        .chain(BLOCKS.iter().take(slot))
        .any(|b| b.compare_exchange(0, addr, AcqRel, Relaxed).is_ok());
    if !claimed {
        // SAFETY: our own mapping, never handed out.
        unsafe { libc::munmap(base.cast(), len) };
        return None;
    }
    Some(block)
}

/// Whether `p` is a live nested block.
pub(crate) fn owns(p: usize) -> bool {
    p != 0 && BLOCKS.iter().any(|b| b.load(Acquire) == p)
}

/// The mapping and usable size of the live nested block `p`, if it is one.
pub(crate) fn usable(p: usize) -> Option<usize> {
    if !owns(p) {
        return None;
    }
    let (base, len) = header(p);
    Some(base + len - p)
}

fn header(p: usize) -> (usize, usize) {
    let h = core::ptr::with_exposed_provenance::<usize>(p - HEADER);
    // SAFETY: `p` is a live nested block: its header lies in its mapping, which stays
    // mapped until the caller that removes `p` from the table unmaps it.
    let base = unsafe { h.read() };
    // SAFETY: as above, the second word.
    let len = unsafe { h.wrapping_add(1).read() };
    (base, len)
}

/// Unmaps the nested block `p`; `false` when it is not one (nothing happens then).
pub(crate) fn free(p: usize) -> bool {
    if p == 0 {
        return false;
    }
    let Some(entry) = BLOCKS.iter().find(|b| b.load(Acquire) == p) else { return false };
    if entry.compare_exchange(p, 0, AcqRel, Relaxed).is_err() {
        return false;
    }
    let (base, len) = header(p);
    // SAFETY: the block was ours and we removed it from the table, so nobody else unmaps
    // it; the caller gives it up.
    unsafe { libc::munmap(core::ptr::with_exposed_provenance_mut::<libc::c_void>(base), len) };
    true
}

/// Records the heap block `p` to be freed by the next call that enters the heap.
pub(crate) fn defer_free(p: usize) {
    for d in &DEFERRED {
        if d.compare_exchange(0, p, AcqRel, Relaxed).is_ok() {
            PENDING.fetch_add(1, Release);
            return;
        }
    }
    DROPPED.fetch_add(1, Relaxed);
}

/// Calls `free` on every deferred block (from a thread inside the heap).
#[inline]
pub(crate) fn drain(mut free: impl FnMut(usize)) {
    if PENDING.load(Acquire) == 0 {
        return;
    }
    drain_slow(&mut free);
}

#[cold]
fn drain_slow(free: &mut dyn FnMut(usize)) {
    for d in &DEFERRED {
        let p = d.swap(0, AcqRel);
        if p != 0 {
            PENDING.fetch_sub(1, Release);
            free(p);
        }
    }
}

/// Deferred frees dropped so far (the table was full).
pub(crate) fn dropped() -> usize {
    DROPPED.load(Relaxed)
}
