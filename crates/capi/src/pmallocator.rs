//! The physical memory allocator (seed 004): `pmallocator_get_header`,
//! `pmallocator_get_header_size`, `pmallocator_init_region`, `pmallocator_allocate`,
//! `pmallocator_free`, over `memkit-phys`.
//!
//! The areas are physical address ranges of the caller's own: memkit keeps no RAM behind
//! them (the hosted RAM belongs to the dataspace manager's pools). What the seed stores in
//! the header region inside the area, memkit stores in words it keeps for that header
//! region ([`Headers`]): the same words, with no pointers in them. An allocator is named by
//! its header region, as in the seed; areas of two allocators may not overlap.
//!
//! The reserved regions come from the caller's enumerator, called with `user` until it
//! returns `false` (so it must start over on each call of `get_header` or `init_region`),
//! at most [`MAX_RESERVED`] times.

use core::ffi::c_void;

use memkit_phys::{Allocator, MemoryArea};
use memkit_types::{Order, PhysAddr};

use crate::ffi;
use crate::state::with;
use crate::types::{error_t, memory_area_t, memory_region_t};

/// `ERR_NONE`: success.
pub const ERR_NONE: error_t = 0;
/// `ERR_OUT_OF_MEMORY`: no room for the header region.
pub const ERR_OUT_OF_MEMORY: error_t = 1;
/// `ERR_NOT_VALID`: an unsupported order, an area that cannot be freed, or a bad argument.
pub const ERR_NOT_VALID: error_t = 2;
/// `ERR_PHYSICAL_MEMORY_FULL`: no free block of the requested order.
pub const ERR_PHYSICAL_MEMORY_FULL: error_t = 3;
/// `FRAME_ORDER_4KiB`: order 0, one 4 KiB frame.
pub const FRAME_ORDER_4KiB: u8 = 0;

/// The most reserved regions memkit takes from an enumerator in one call.
pub const MAX_RESERVED: usize = 4096;
/// The largest header memkit keeps (64 MiB of words: an area of about 1 TiB).
pub const MAX_HEADER_BYTES: u64 = 64 << 20;

/// The enumerator of reserved regions (`get_next_reserved_region_t`): writes the next
/// region to `*region` and returns `true`, or returns `false` after the last.
pub type get_next_reserved_region_t =
    Option<unsafe extern "C" fn(user: *mut c_void, region: *mut memory_area_t) -> bool>;

const _: () = assert!(ERR_OUT_OF_MEMORY == memkit_phys::ErrorCode::OutOfMemory as i32);
const _: () = assert!(ERR_NOT_VALID == memkit_phys::ErrorCode::NotValid as i32);
const _: () = assert!(ERR_PHYSICAL_MEMORY_FULL == memkit_phys::ErrorCode::PhysicalMemoryFull as i32);

/// One allocator: its area, its header region and the header's words.
#[derive(Debug)]
struct Header {
    area: MemoryArea,
    region: MemoryArea,
    words: Vec<u64>,
}

/// The headers of the allocators made by `pmallocator_init_region`, by header region.
#[derive(Debug, Default)]
pub struct Headers {
    list: Vec<Header>,
}

impl Headers {
    /// Checks that no two areas overlap, no two header regions are the same, and each
    /// header's words hold a sound allocator for its area.
    ///
    /// # Panics
    /// When that is not so.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&mut self) {
        for (i, a) in self.list.iter().enumerate() {
            for b in &self.list[i + 1..] {
                assert!(!a.area.overlaps(b.area), "areas {} and {} overlap", a.area, b.area);
            }
        }
        for h in &mut self.list {
            let (area, region) = (h.area, h.region);
            let alloc = Allocator::attach(&mut h.words).expect("a header's words hold an allocator");
            assert_eq!(alloc.area(), area);
            assert_eq!(alloc.header_region().start, region.start);
            alloc.check_invariants();
        }
    }

    fn find(&mut self, region: MemoryArea) -> Option<&mut Header> {
        self.list.iter_mut().find(|h| h.region == region)
    }
}

fn area(a: memory_area_t) -> Option<MemoryArea> {
    Some(MemoryArea::new(PhysAddr::try_new(a.start).ok()?, a.size))
}

fn c_area(a: MemoryArea) -> memory_area_t {
    memory_area_t { start: a.start.as_u64(), size: a.size }
}

/// The reserved regions the enumerator yields; `None` when it yields too many or a region
/// memkit cannot represent.
///
/// # Safety
/// A non-null `enumerator` is safe to call with `user` and a pointer to a `memory_area_t`.
unsafe fn reserved(enumerator: get_next_reserved_region_t, user: *mut c_void) -> Option<Vec<MemoryArea>> {
    let mut out = Vec::new();
    let Some(next) = enumerator else { return Some(out) };
    loop {
        let mut r = memory_area_t::default();
        // SAFETY: the caller's enumerator, called as its contract says.
        if !unsafe { next(user, &mut r) } {
            return Some(out);
        }
        if out.len() == MAX_RESERVED {
            return None;
        }
        out.push(area(r)?);
    }
}

/// `pmallocator_get_header_size`: the bytes the header of `area` needs (a multiple of
/// 4 KiB); 0 for an area that cannot be managed (unaligned, empty, past the physical
/// limit).
#[unsafe(no_mangle)]
pub extern "C" fn pmallocator_get_header_size(area: memory_area_t) -> u64 {
    self::area(area).and_then(|a| memkit_phys::header_size(a).ok()).unwrap_or(0)
}

/// `pmallocator_get_header`: a 4 KiB aligned region inside `area`, of the header's size,
/// that avoids every reserved region, into `*headerOUT`. Returns `ERR_NONE`,
/// `ERR_OUT_OF_MEMORY` (no such region), or `ERR_NOT_VALID` (an area that cannot be
/// managed, a null `headerOUT`, too many reserved regions).
///
/// # Safety
/// `enumerator` is null or safe to call with `user`; a non-null `headerOUT` is valid for a
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pmallocator_get_header(
    area: memory_area_t,
    enumerator: get_next_reserved_region_t,
    user: *mut c_void,
    headerOUT: *mut memory_area_t,
) -> error_t {
    if headerOUT.is_null() {
        return ERR_NOT_VALID;
    }
    let Some(a) = self::area(area) else { return ERR_NOT_VALID };
    // SAFETY: the caller's enumerator and user, as its contract says.
    let Some(res) = (unsafe { reserved(enumerator, user) }) else { return ERR_NOT_VALID };
    match memkit_phys::get_header(a, res.iter().copied()) {
        Ok(h) => {
            // SAFETY: non-null (checked), valid by the caller's contract.
            let _ = unsafe { ffi::put(headerOUT, c_area(h)) };
            ERR_NONE
        }
        Err(e) => e.code() as error_t,
    }
}

/// `pmallocator_init_region`: a fresh allocator for `area` with its header in
/// `header_region` (from `pmallocator_get_header`): every frame is free but those of the
/// reserved regions and of the header region. Initialising the same header region again
/// starts it afresh. Returns `ERR_NONE`, `ERR_NOT_VALID` (an unaligned or too small header
/// region, one outside the area or over a reserved region, an area that overlaps another
/// allocator's) or `ERR_OUT_OF_MEMORY` (a header larger than [`MAX_HEADER_BYTES`]).
///
/// # Safety
/// `enumerator` is null or safe to call with `user`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pmallocator_init_region(
    area: memory_area_t,
    header_region: memory_region_t,
    enumerator: get_next_reserved_region_t,
    user: *mut c_void,
) -> error_t {
    let (Some(a), Some(region)) = (self::area(area), self::area(header_region)) else { return ERR_NOT_VALID };
    // The enumerator runs before the lock is taken: it may call memkit itself.
    // SAFETY: the caller's enumerator and user, as its contract says.
    let Some(res) = (unsafe { reserved(enumerator, user) }) else { return ERR_NOT_VALID };
    let Ok(bytes) = memkit_phys::header_size(a) else { return ERR_NOT_VALID };
    if bytes > MAX_HEADER_BYTES {
        return ERR_OUT_OF_MEMORY;
    }
    let r = with(|s| {
        let others = s.phys.list.iter().filter(|h| h.region != region);
        if others.clone().any(|h| h.area.overlaps(a)) {
            return ERR_NOT_VALID;
        }
        let mut words = Vec::new();
        if words.try_reserve_exact((bytes / 8) as usize).is_err() {
            return ERR_OUT_OF_MEMORY;
        }
        words.resize((bytes / 8) as usize, 0);
        if let Err(e) = Allocator::init(a, region, &mut words, res.iter().copied()) {
            return e.code() as error_t;
        }
        s.phys.list.retain(|h| h.region != region);
        s.phys.list.push(Header { area: a, region, words });
        ERR_NONE
    });
    r.unwrap_or(ERR_OUT_OF_MEMORY)
}

/// `pmallocator_allocate`: a free block of `2^frame_order` frames, aligned to its size, from
/// the allocator of `header_region`, into `*areaOUT`. Returns `ERR_NONE`, `ERR_NOT_VALID`
/// (an order the area cannot hold, an unknown header region, a null `areaOUT`) or
/// `ERR_PHYSICAL_MEMORY_FULL`.
///
/// # Safety
/// A non-null `areaOUT` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pmallocator_allocate(
    frame_order: u8,
    header_region: memory_region_t,
    areaOUT: *mut memory_area_t,
) -> error_t {
    if areaOUT.is_null() {
        return ERR_NOT_VALID;
    }
    let Some(region) = area(header_region) else { return ERR_NOT_VALID };
    let Ok(order) = Order::try_new(u32::from(frame_order)) else { return ERR_NOT_VALID };
    let r = with(|s| {
        let Some(h) = s.phys.find(region) else { return Err(ERR_NOT_VALID) };
        let Ok(mut alloc) = Allocator::attach(&mut h.words) else { return Err(ERR_NOT_VALID) };
        alloc.allocate(order).map_err(|e| e.code() as error_t)
    });
    match r {
        Ok(Ok(frame)) => {
            let a = MemoryArea::from_frames(frame, memkit_types::FrameCount::new(1 << order.get()));
            // SAFETY: non-null (checked), valid by the caller's contract.
            let _ = unsafe { ffi::put(areaOUT, c_area(a)) };
            ERR_NONE
        }
        Ok(Err(e)) => e,
        Err(_) => ERR_OUT_OF_MEMORY,
    }
}

/// `pmallocator_free`: gives the block `area` back to the allocator of `header_region`.
/// Returns `ERR_NONE` or `ERR_NOT_VALID` (already free, not a naturally aligned block of the
/// area, an unknown header region); nothing changes on error.
#[unsafe(no_mangle)]
pub extern "C" fn pmallocator_free(area: memory_area_t, header_region: memory_region_t) -> error_t {
    let (Some(a), Some(region)) = (self::area(area), self::area(header_region)) else { return ERR_NOT_VALID };
    let r = with(|s| {
        let Some(h) = s.phys.find(region) else { return ERR_NOT_VALID };
        let Ok(mut alloc) = Allocator::attach(&mut h.words) else { return ERR_NOT_VALID };
        match alloc.free(a) {
            Ok(()) => ERR_NONE,
            Err(e) => e.code() as error_t,
        }
    });
    r.unwrap_or(ERR_OUT_OF_MEMORY)
}
