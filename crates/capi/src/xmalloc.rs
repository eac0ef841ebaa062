//! AIX's kernel heap services (seed 002): `xmalloc`, `xmfree`, `palloc`, `init_heap`, `pin`,
//! `unpin`, and the heap handles `kernel_heap`, `pinned_heap` and their page-size variants.
//!
//! The heap handles are `caddr_t` values that name a heap (they point at nothing). The
//! kernel heaps are set up when memkit boots, over the default pool, with 16 MiB large
//! pages when they can be had; `init_heap` makes a private heap over an area of the
//! caller's. As the seed says, `xmalloc` returns null when the memory cannot be allocated or
//! the heap is not one (a handle that names no heap counts as an uninitialised heap).
//! `malloc(size)` is `xmalloc(size, 0, kernel_heap)` in the seed; memkit leaves the name
//! `malloc` to the C library and offers `palloc`.

use core::ffi::c_int;
use core::ptr::NonNull;

use memkit_heap::{AddressHeaps, HeapId, KernelHeaps, RegionPageSource, SingleCpu};
use memkit_region::Found;
use memkit_types::{PAGE_SIZE, Rights, VirtAddr};

use crate::state::{Heaps, PrivateHeap, with};
use crate::types::{caddr_t, heapaddr_t};

/// `EINVAL` of `<errno.h>`, as `pin` and `unpin` return it.
const EINVAL: c_int = memkit_heap::EINVAL;

const fn token(n: usize) -> caddr_t {
    caddr_t(core::ptr::without_provenance_mut(n))
}

/// `kernel_heap`: pageable memory, in the preferred page size.
#[unsafe(no_mangle)]
pub static kernel_heap: caddr_t = token(1);
/// `pinned_heap`: memory that is pinned when `xmalloc` returns, and must stay pinned.
#[unsafe(no_mangle)]
pub static pinned_heap: caddr_t = token(2);
/// `kernel_heap_4K_64K`: pageable memory in regular pages.
#[unsafe(no_mangle)]
pub static kernel_heap_4K_64K: caddr_t = token(3);
/// `kernel_heap_16M`: pageable memory in 16 MiB pages (the default heap without them).
#[unsafe(no_mangle)]
pub static kernel_heap_16M: caddr_t = token(4);
/// `pinned_heap_4K_64K`: pinned memory in regular pages.
#[unsafe(no_mangle)]
pub static pinned_heap_4K_64K: caddr_t = token(5);
/// `pinned_heap_16M`: pinned memory in 16 MiB pages (the default heap without them).
#[unsafe(no_mangle)]
pub static pinned_heap_16M: caddr_t = token(6);

/// The first private heap's handle; the `n`th `init_heap` returns `PRIVATE_BASE + n`.
const PRIVATE_BASE: usize = 0x100;
/// The most private heaps a process may make.
pub const MAX_PRIVATE_HEAPS: usize = 64;

/// A heap a handle names.
#[derive(Clone, Copy)]
enum Target {
    Kernel(&'static Heaps, HeapId),
    Private(&'static PrivateHeap),
}

fn target(heap: caddr_t) -> Option<Target> {
    let n = heap.0 as usize;
    with(|s| {
        let id = match n {
            1 => HeapId::Kernel,
            2 => HeapId::Pinned,
            3 => HeapId::Kernel4K64K,
            4 => HeapId::Kernel16M,
            5 => HeapId::Pinned4K64K,
            6 => HeapId::Pinned16M,
            _ => return n.checked_sub(PRIVATE_BASE).and_then(|i| s.private_heaps.get(i)).map(|h| Target::Private(h.0)),
        };
        Some(Target::Kernel(s.heaps, id))
    })
    .ok()
    .flatten()
}

fn null() -> caddr_t {
    caddr_t(core::ptr::null_mut())
}

/// `xmalloc`: `size` bytes from `heap`, aligned to `2^align` bytes; null when the memory
/// cannot be allocated, the size is not positive, or `heap` names no heap.
#[unsafe(no_mangle)]
pub extern "C" fn xmalloc(size: c_int, align: c_int, heap: caddr_t) -> caddr_t {
    let (Ok(size), Ok(align)) = (usize::try_from(size), u32::try_from(align)) else { return null() };
    if size == 0 {
        return null();
    }
    let p = match target(heap) {
        Some(Target::Kernel(h, id)) => h.try_xmalloc(size, align, id).ok(),
        Some(Target::Private(h)) => h.try_xmalloc(size, align, HeapId::Kernel).ok(),
        None => None,
    };
    p.map_or(null(), |p| caddr_t(p.as_ptr().cast()))
}

/// `palloc`: `xmalloc(size, align, kernel_heap)`.
#[unsafe(no_mangle)]
pub extern "C" fn palloc(size: c_int, align: c_int) -> caddr_t {
    xmalloc(size, align, kernel_heap)
}

/// `ptr` as a block address the heaps may look up: non-null and canonical (the heaps take
/// only addresses that can be theirs).
fn block(ptr: caddr_t) -> Option<NonNull<u8>> {
    VirtAddr::try_new(ptr.0 as usize).ok()?;
    NonNull::new(ptr.0.cast::<u8>())
}

/// `xmfree`: gives back the block at `ptr` to `heap`. Returns `0`, or `-1` (nothing freed)
/// when `ptr` is not the start of a live block of that heap (a double free, a foreign
/// pointer), is still pinned (kernel heap), or `heap` names no heap.
#[unsafe(no_mangle)]
pub extern "C" fn xmfree(ptr: caddr_t, heap: caddr_t) -> c_int {
    let Some(p) = block(ptr) else { return -1 };
    let r = match target(heap) {
        Some(Target::Kernel(h, id)) => h.xmfree(p, id).map_err(|e| e.code()),
        Some(Target::Private(h)) => h.xmfree(p, HeapId::Kernel).map_err(|e| e.code()),
        None => Err(-1),
    };
    match r {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// Which kernel heap family holds the block at `p`: the kernel heap, else the pinned heap.
fn pin_op(addr: caddr_t, length: c_int, pin: bool) -> c_int {
    let Some(p) = block(addr) else { return EINVAL };
    if length <= 0 {
        return EINVAL;
    }
    let Some(Target::Kernel(h, _)) = target(kernel_heap) else { return EINVAL };
    let mut last = EINVAL;
    for id in [HeapId::Kernel, HeapId::Pinned] {
        let r = if pin {
            h.pin(p, id).map(drop).map_err(|e| e.code())
        } else {
            h.unpin(p, id).map(drop).map_err(|e| e.code())
        };
        match r {
            Ok(()) => return 0,
            Err(e) => last = e,
        }
    }
    last
}

/// `pin`: pins the kernel-heap block at `addr` (`length` bytes of it) until `unpin`; pins
/// nest. A pinned-heap block is pinned already (another pin is counted). Returns `0`,
/// `EINVAL` (not a live block start of the kernel heaps, a length that is not positive) or
/// `ENOMEM` (no room to record the pin).
#[unsafe(no_mangle)]
pub extern "C" fn pin(addr: caddr_t, length: c_int) -> c_int {
    pin_op(addr, length, true)
}

/// `unpin`: undoes one `pin` of the kernel-heap block at `addr`. Returns `0` or `EINVAL`
/// (not pinned, not a block, or pinned-heap memory, which must stay pinned).
#[unsafe(no_mangle)]
pub extern "C" fn unpin(addr: caddr_t, length: c_int) -> c_int {
    pin_op(addr, length, false)
}

/// `init_heap`: a private heap over `size` bytes at `area` (page aligned, a whole number of
/// pages), which must lie in regions of the process's address space attached with write
/// rights (`l4re_rm_attach`, `l4rm_attach`) and overlap no other private heap's area.
/// `heapp` must be null or point at a null value.
/// Returns the heap's handle for `xmalloc` and `xmfree`, or null when the area is refused,
/// no heap is left ([`MAX_PRIVATE_HEAPS`]) or the heap's own tables do not fit.
///
/// # Safety
/// The area stays attached, and nothing else uses it, for as long as the heap is used (a
/// detached area ends the process on the heap's next touch). A non-null `heapp` is valid
/// for a read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn init_heap(area: caddr_t, size: c_int, heapp: *mut heapaddr_t) -> heapaddr_t {
    // SAFETY: a non-null heapp is valid for a read by the caller's contract.
    if let Some(h) = unsafe { crate::ffi::get(heapp) }
        && !h.0.is_null()
    {
        return null();
    }
    let Ok(len) = usize::try_from(size) else { return null() };
    let start = area.0 as usize;
    if len == 0 || !start.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
        return null();
    }
    let r = with(|s| {
        if s.private_heaps.len() >= MAX_PRIVATE_HEAPS || !writable(s, start, len) {
            return None;
        }
        // Two heaps over one area would hand out the same bytes.
        if s.private_heaps.iter().any(|&(_, at, n)| start < at + n && at < start + len) {
            return None;
        }
        let base = NonNull::new(area.0.cast::<u8>())?;
        // SAFETY: the area lies in regions attached writable (checked above), so every byte
        // is memory the fault handler serves; the caller promises it stays attached and
        // unused by anything else while the heap lives.
        let source = unsafe { RegionPageSource::new(base, len) }?;
        let source: &'static RegionPageSource = Box::leak(Box::new(source));
        let heap: &'static PrivateHeap =
            Box::leak(Box::new(AddressHeaps::new(KernelHeaps::new(source, source, SingleCpu))));
        heap.init(false).ok()?;
        s.private_heaps.push((heap, start, len));
        Some(token(PRIVATE_BASE + s.private_heaps.len() - 1))
    });
    r.ok().flatten().unwrap_or_else(null)
}

/// Whether `start .. start + len` lies in attached regions with write rights.
fn writable(s: &crate::state::State, start: usize, len: usize) -> bool {
    let Some(end) = start.checked_add(len) else { return false };
    let space = s.space;
    s.system.lock(|st| {
        let Ok(map) = st.region_map(space) else { return false };
        let mut at = start;
        while at < end {
            let Ok(v) = VirtAddr::try_new(at) else { return false };
            match map.find(v, 1) {
                Ok(Found::Region(r)) if r.rights.contains(Rights::RW) && r.start.as_usize() <= at => {
                    at = r.start.as_usize() + r.size;
                }
                _ => return false,
            }
        }
        true
    })
}

/// The number of private heaps `init_heap` made.
#[unsafe(no_mangle)]
pub extern "C" fn memkit_private_heaps() -> c_int {
    with(|s| s.private_heaps.len() as c_int).unwrap_or(0)
}
