//! Every C entry called with garbage: null pointers, handles that name nothing or were
//! freed, wild and non-canonical addresses, sizes and orders out of range. Each call must
//! return the seed's error, never crash, and leave the system working.

use core::ffi::{c_int, c_void};
use core::ptr::{null, null_mut};

use memkit::errors::*;
use memkit::factory::*;
use memkit::l4dm::*;
use memkit::l4re::*;
use memkit::l4re_rm::*;
use memkit::l4rm::*;
use memkit::pmallocator::*;
use memkit::state::{check_all_invariants, check_invariants, memkit_init};
use memkit::types::*;
use memkit::xmalloc::*;
use proptest::prelude::*;

const EINVAL: c_int = 22;

/// The tests of this file share the process's one system: one at a time, so that a handle
/// or id one of them makes (the first dataspace's id is 1) is not another's garbage.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Handle values that name no slot (or a freed one, made below).
const BAD_CAPS: [l4_cap_idx_t; 7] = [0, 1, 0x800, 0xfff, 0x1001, 0x7fff_f000, l4_cap_idx_t::MAX];
/// Addresses no region holds: null, low, odd, non-canonical, the top.
const WILD: [usize; 6] = [0, 1, 0x1000, 0x1234_5677, 0x8000_0000_0000, usize::MAX];

fn bad_ids() -> Vec<l4dm_dataspace_t> {
    let mut v = Vec::new();
    for id in [0, 1, 12345, u64::MAX, 1 << 63, 0xffff_ffff] {
        v.push(l4dm_dataspace_t { id, manager: MEMKIT_DSM });
        v.push(l4dm_dataspace_t { id, manager: L4_INVALID_ID });
    }
    v
}

#[test]
fn l4re_entries_refuse_garbage() {
    let _serial = one_at_a_time();
    assert_eq!(memkit_init(), 0);
    let empty = l4re_util_cap_alloc();
    let freed = l4re_util_cap_alloc();
    l4re_util_cap_free(freed);
    let mut caps = BAD_CAPS.to_vec();
    caps.push(freed);
    for &cap in &caps {
        let e = -L4_EINVAL as i64;
        assert_eq!(l4re_ma_alloc(4096, cap, 0), e as _);
        assert_eq!(l4re_ma_alloc_align(4096, cap, L4RE_MA_CONTINUOUS, 12), e as _);
        assert_eq!(l4re_ma_free(cap), e as _);
        assert_eq!(l4re_ds_size(cap), e as u64);
        assert_eq!(l4re_ds_flags(cap), e as _);
        assert_eq!(l4re_ds_copy_in(cap, 0, cap, 0, 1), -L4_EINVAL);
        assert_eq!(l4re_ds_clear(cap, 0, 1), e as _);
        assert_eq!(l4re_ds_allocate(cap, 0, 1), e as _);
        let mut stats = l4re_ds_stats_t::default();
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { l4re_ds_info(cap, &mut stats) }, -L4_EINVAL);
        let (mut pa, mut ps) = (0, 0);
        // SAFETY: valid out-pointers.
        assert_eq!(unsafe { l4re_ds_phys(cap, 0, &mut pa, &mut ps) }, -L4_EINVAL);
        let mut start: *mut c_void = null_mut();
        // SAFETY: a valid in/out pointer.
        let r = unsafe { l4re_rm_attach(&mut start, 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, cap, 0, 12) };
        assert_eq!(r, -L4_EINVAL);
        let root = memkit::factory::l4re_env();
        // SAFETY: l4re_env returns a valid pointer to a static.
        let root = unsafe { (*root).mem_alloc };
        assert_eq!(l4re_ma_alloc_srv(cap, 4096, empty, 0), e as _);
        assert_eq!(l4re_ma_alloc_align_srv(cap, 4096, empty, 0, 12), e as _);
        assert_eq!(l4re_ma_free_srv(cap, cap), e as _);
        assert_eq!(l4re_ma_free_srv(root, cap), e as _);
        assert_eq!(l4_error(l4_factory_create_factory(cap, empty, 4096)), e as _);
        assert_eq!(l4_error(l4_factory_create_factory(root, cap, 4096)), e as _);
        let (mut limit, mut used) = (0, 0);
        // SAFETY: valid out-pointers.
        assert_eq!(unsafe { memkit_factory_quota(cap, &mut limit, &mut used) }, -L4_EINVAL);
    }
    // An empty slot holds no dataspace.
    assert_eq!(l4re_ds_size(empty), (-L4_EINVAL as i64) as u64);
    assert_eq!(l4re_ma_free(empty), -L4_EINVAL as _);
    // Null pointers where the entry writes.
    // SAFETY: null is what is tried; the entries check it.
    assert_eq!(unsafe { l4re_ds_info(empty, null_mut()) }, -L4_EINVAL);
    // SAFETY: as above.
    assert_eq!(unsafe { l4re_ds_phys(empty, 0, null_mut(), null_mut()) }, -L4_EINVAL);
    // SAFETY: as above.
    assert_eq!(unsafe { l4re_rm_attach(null_mut(), 4096, 0, empty, 0, 12) }, -L4_EINVAL);
    // SAFETY: as above.
    assert_eq!(unsafe { l4re_rm_find(null_mut(), null_mut(), null_mut(), null_mut(), null_mut()) }, -L4_EINVAL);
    // SAFETY: as above.
    assert_eq!(unsafe { l4re_rm_reserve_area(null_mut(), 4096, 0, 12) }, -L4_EINVAL);
    // SAFETY: as above.
    assert!(unsafe { l4re_rm_detach_ds(null_mut(), null_mut()) } < 0);
    // Wild addresses: nothing there.
    for &a in &WILD {
        assert!(l4re_rm_detach(a as *mut c_void) < 0, "{a:#x}");
        assert!(l4re_rm_free_area(a as l4_addr_t) < 0, "{a:#x}");
        let (mut addr, mut size, mut off, mut fl, mut m) = (a as l4_addr_t, 1, 0, 0, 0);
        // SAFETY: valid pointers.
        assert!(unsafe { l4re_rm_find(&mut addr, &mut size, &mut off, &mut fl, &mut m) } < 0, "{a:#x}");
        let mut start = a as l4_addr_t;
        // SAFETY: a valid in/out pointer.
        let r = unsafe { l4re_rm_reserve_area(&mut start, 4096, 0, 12) };
        assert!(r < 0, "{a:#x}");
    }
    // Sizes and flags out of range, on a good slot.
    for size in [0, -1, i64::MIN as _, i64::MAX as _, 1 << 62] {
        assert!(l4re_ma_alloc(size, empty, 0) < 0, "{size}");
    }
    assert_eq!(l4re_ma_alloc(4096, empty, !0), -L4_EINVAL as _);
    assert!(l4re_ma_alloc_align(4096, empty, 0, u64::MAX as _) < 0);
    assert_eq!(l4re_ma_alloc(4096, empty, 0), 0);
    for (off, len) in [(0, u64::MAX), (u64::MAX, 1), (4096, 1), (1, 4096)] {
        assert!(l4re_ds_copy_in(empty, off, empty, 0, len) < 0, "{off} {len}");
        assert!(l4re_ds_clear(empty, off, len) < 0, "{off} {len}");
    }
    let mut start: *mut c_void = null_mut();
    for (size, flags, offs, align) in [
        (0, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, 0, 12),
        (usize::MAX as _, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, 0, 12),
        (4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, u64::MAX, 12),
        (4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, 0, 255),
        (4096, 0xffff_ffff, 0, 12),
    ] {
        // SAFETY: a valid in/out pointer.
        let r = unsafe { l4re_rm_attach(&mut start, size, flags, empty, offs, align) };
        assert!(r < 0, "{size} {flags:#x} {offs} {align}");
    }
    assert_eq!(l4re_ma_free(empty), 0);
    l4re_util_cap_free(empty);
    check_all_invariants();
}

#[test]
fn l4dm_entries_refuse_garbage() {
    let _serial = one_at_a_time();
    let mut size: l4_size_t = 0;
    let mut out = L4DM_INVALID_DATASPACE;
    let mut addr: *mut c_void = null_mut();
    let name = c"garbage".as_ptr();
    for id in bad_ids() {
        let d = &id as *const l4dm_dataspace_t;
        // SAFETY: valid pointers throughout.
        assert_eq!(unsafe { l4dm_mem_size(d, &mut size) }, -L4_EINVAL);
        // SAFETY: as above.
        assert_eq!(unsafe { l4dm_mem_resize(d, 4096) }, -L4_EINVAL);
        // SAFETY: as above.
        assert_eq!(unsafe { l4dm_mem_info(d, null_mut(), null_mut(), null_mut(), null_mut()) }, -L4_EINVAL);
        // SAFETY: as above.
        assert_eq!(unsafe { l4dm_close(d) }, -L4_EINVAL);
        // SAFETY: as above.
        assert_eq!(unsafe { l4dm_copy(d, L4DM_COW, name, &mut out) }, -L4_EINVAL);
        // SAFETY: as above.
        assert_eq!(unsafe { l4dm_copy_long(d, 1, 2, 3, 0, name, &mut out) }, -L4_EINVAL);
        // SAFETY: as above.
        let r = unsafe { l4dm_memphys_copy(d, 0, 0, 4096, 0, usize::MAX as _, 0, 0, 0, name, &mut out) };
        assert_eq!(r, -L4_EINVAL);
        let (mut pa, mut ps) = (0, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { l4dm_mem_ds_phys_addr(d, 0, 1, &mut pa, &mut ps) }, -L4_EINVAL);
        let mut pieces = [l4dm_mem_addr_t::default(); 2];
        // SAFETY: as above, an array of 2.
        assert_eq!(unsafe { l4dm_mem_phys_addr(d, 0, 1, pieces.as_mut_ptr(), 2, &mut ps) }, -L4_EINVAL);
        // SAFETY: as above.
        assert_eq!(unsafe { l4rm_attach(d, 4096, 0, L4DM_RW, &mut addr) }, -L4_EINVAL);
        let at = 0x10_0000_0000usize as *const c_void;
        // SAFETY: as above.
        assert_eq!(unsafe { l4rm_attach_to_region(d, at, 4096, 0, L4DM_RW) }, -L4_EINVAL);
        // SAFETY: as above.
        assert_eq!(unsafe { l4dm_share(d, MEMKIT_CLIENT, L4DM_RO, &mut out) }, -L4_EINVAL);
        let (mut at, mut area) = (0, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { l4rm_area_reserve(1 << 20, 0, &mut at, &mut area) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { l4rm_area_attach(d, area, 4096, 0, L4DM_RW, &mut addr) }, -L4_EINVAL);
        // SAFETY: as above.
        assert_eq!(unsafe { l4rm_area_attach_to_region(d, area, at as *const c_void, 4096, 0, L4DM_RW) }, -L4_EINVAL);
        assert_eq!(l4rm_area_release(area), 0);
    }
    // Null where the entries read or write.
    // SAFETY: null is what is tried; the entries check it.
    assert_eq!(unsafe { l4dm_mem_size(null(), null_mut()) }, -L4_EINVAL);
    // SAFETY: as above.
    assert_eq!(unsafe { l4dm_close(null()) }, -L4_EINVAL);
    // SAFETY: as above.
    assert_eq!(unsafe { l4dm_mem_open(L4DM_DEFAULT_DSM, 4096, 0, 0, null(), null_mut()) }, -L4_EINVAL);
    // SAFETY: as above.
    assert_eq!(unsafe { l4dm_memphys_open(0, usize::MAX as _, 4096, 0, 0, null(), null_mut()) }, -L4_EINVAL);
    // SAFETY: as above (a null name is the empty name).
    assert_eq!(unsafe { l4dm_mem_open(L4DM_DEFAULT_DSM, 4096, 0, 0, null(), &mut out) }, 0);
    let good = out;
    // SAFETY: as above.
    assert_eq!(unsafe { l4dm_copy(&good, 0, null(), null_mut()) }, -L4_EINVAL);
    // SAFETY: as above.
    assert_eq!(unsafe { l4rm_attach(&good, 4096, 0, L4DM_RW, null_mut()) }, -L4_EINVAL);
    // SAFETY: as above.
    assert_eq!(unsafe { l4dm_mem_ds_phys_addr(&good, 0, 1, null_mut(), null_mut()) }, -L4_EINVAL);
    // SAFETY: as above; a count of zero or below is refused before the array is touched.
    assert_eq!(unsafe { l4dm_mem_phys_addr(&good, 0, 1, null_mut(), -5, null_mut()) }, -L4_EINVAL);
    // Values out of range on a good id.
    for (src, dst, num) in [(u64::MAX, 0, 1), (0, u64::MAX, 1), (4095, 0, 2), (0, 0, usize::MAX as u64 - 1)] {
        // SAFETY: valid pointers.
        let r = unsafe { l4dm_copy_long(&good, src as _, dst as _, num as _, 0, name, &mut out) };
        assert!(r < 0, "{src} {dst} {num}");
    }
    // SAFETY: valid pointers; unknown flags.
    assert_eq!(unsafe { l4dm_copy(&good, 0x8000_0000, name, &mut out) }, -L4_EINVAL);
    // SAFETY: valid pointers; an alignment that is no power of two.
    assert_eq!(unsafe { l4dm_mem_open(L4DM_DEFAULT_DSM, 4096, 12, 0, name, &mut out) }, -L4_EINVAL);
    for pool in [-1, 8, c_int::MAX, c_int::MIN] {
        // SAFETY: valid pointers.
        assert!(unsafe { l4dm_memphys_open(pool, usize::MAX as _, 4096, 0, 0, name, &mut out) } < 0);
    }
    for at in [1usize, 0x1_0000_0000, 1 << 60] {
        // SAFETY: valid pointers; a fixed address outside every pool.
        assert!(unsafe { l4dm_memphys_open(0, at as _, 4096, 0, 0, name, &mut out) } < 0, "{at:#x}");
    }
    for &a in &WILD {
        assert_eq!(l4rm_detach(a as *const c_void), -L4_EINVAL, "{a:#x}");
    }
    let other = l4_threadid_t { task: 7, thread: 7 };
    assert_eq!(l4dm_close_all(other, MEMKIT_CLIENT, 0), -L4_ENODM);
    assert_eq!(l4dm_close_all(L4DM_DEFAULT_DSM, other, 0), -L4_EPERM);
    // SAFETY: a valid pointer.
    assert_eq!(unsafe { l4dm_close(&good) }, 0);
    // SAFETY: as above: closed twice.
    assert_eq!(unsafe { l4dm_close(&good) }, -L4_EINVAL);
    check_all_invariants();
}

extern "C" fn endless(_user: *mut c_void, region: *mut memory_area_t) -> bool {
    // SAFETY: memkit passes a valid pointer.
    unsafe { region.write(memory_area_t { start: 0x1000, size: 0x1000 }) };
    true
}

extern "C" fn wild_region(_user: *mut c_void, region: *mut memory_area_t) -> bool {
    static ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    // SAFETY: memkit passes a valid pointer.
    unsafe { region.write(memory_area_t { start: u64::MAX, size: u64::MAX }) };
    ONCE.swap(false, std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn pmallocator_entries_refuse_garbage() {
    let _serial = one_at_a_time();
    let bad_areas = [
        memory_area_t { start: 0, size: 0 },
        memory_area_t { start: 1, size: 4096 },
        memory_area_t { start: 0x1000, size: 4095 },
        memory_area_t { start: u64::MAX, size: u64::MAX },
        memory_area_t { start: u64::MAX - 4095, size: 4096 },
        memory_area_t { start: 1 << 60, size: 1 << 62 },
    ];
    let mut out = memory_area_t::default();
    for a in bad_areas {
        // SAFETY: a valid out-pointer, no enumerator.
        assert_ne!(unsafe { pmallocator_get_header(a, None, null_mut(), &mut out) }, ERR_NONE, "{a:?}");
        // SAFETY: no enumerator.
        assert_ne!(unsafe { pmallocator_init_region(a, a, None, null_mut()) }, ERR_NONE, "{a:?}");
        for order in [0u8, 1, 40, 41, 255] {
            // SAFETY: a valid out-pointer.
            assert_eq!(unsafe { pmallocator_allocate(order, a, &mut out) }, ERR_NOT_VALID);
        }
        assert_eq!(pmallocator_free(a, a), ERR_NOT_VALID);
    }
    let area = memory_area_t { start: 0x40_0000_0000, size: 1 << 20 };
    // SAFETY: null out-pointer, refused.
    assert_eq!(unsafe { pmallocator_get_header(area, None, null_mut(), null_mut()) }, ERR_NOT_VALID);
    // SAFETY: an enumerator that never ends: cut off at MAX_RESERVED.
    assert_eq!(unsafe { pmallocator_get_header(area, Some(endless), null_mut(), &mut out) }, ERR_NOT_VALID);
    // SAFETY: an enumerator yielding a region past the physical limit.
    assert_eq!(unsafe { pmallocator_get_header(area, Some(wild_region), null_mut(), &mut out) }, ERR_NOT_VALID);
    // SAFETY: as above, fine.
    assert_eq!(unsafe { pmallocator_get_header(area, None, null_mut(), &mut out) }, ERR_NONE);
    let hdr = out;
    // A header region that is misaligned, too small, outside the area.
    for h in [
        memory_area_t { start: hdr.start + 1, size: hdr.size },
        memory_area_t { start: hdr.start, size: 16 },
        memory_area_t { start: 0x1000, size: hdr.size },
    ] {
        // SAFETY: no enumerator.
        assert_eq!(unsafe { pmallocator_init_region(area, h, None, null_mut()) }, ERR_NOT_VALID, "{h:?}");
    }
    // An area too large to keep a header for.
    let huge = memory_area_t { start: 0, size: 1 << 50 };
    // SAFETY: no enumerator.
    assert_eq!(unsafe { pmallocator_init_region(huge, hdr, None, null_mut()) }, ERR_OUT_OF_MEMORY);
    // SAFETY: no enumerator.
    assert_eq!(unsafe { pmallocator_init_region(area, hdr, None, null_mut()) }, ERR_NONE);
    // SAFETY: null out-pointer.
    assert_eq!(unsafe { pmallocator_allocate(0, hdr, null_mut()) }, ERR_NOT_VALID);
    // SAFETY: valid.
    assert_eq!(unsafe { pmallocator_allocate(0, hdr, &mut out) }, ERR_NONE);
    assert_eq!(pmallocator_free(out, hdr), ERR_NONE);
    assert_eq!(pmallocator_free(out, hdr), ERR_NOT_VALID);
    assert_eq!(pmallocator_free(hdr, hdr), ERR_NOT_VALID, "the header is never free to give back");
    check_all_invariants();
}

#[test]
fn xmalloc_entries_refuse_garbage() {
    let _serial = one_at_a_time();
    let heaps = [
        caddr_t(null_mut()),
        caddr_t(7 as *mut _),
        caddr_t(0xff as *mut _),
        caddr_t((0x100 + 63) as *mut _),
        caddr_t(usize::MAX as *mut _),
    ];
    for h in heaps {
        assert!(xmalloc(16, 0, h).0.is_null(), "{h:?}");
        assert_eq!(xmfree(caddr_t(0x1000 as *mut _), h), -1);
    }
    for &a in &WILD {
        let p = caddr_t(a as *mut _);
        for h in [kernel_heap, pinned_heap, kernel_heap_16M, pinned_heap_4K_64K] {
            assert_eq!(xmfree(p, h), -1, "{a:#x}");
        }
        assert_eq!(pin(p, 8), EINVAL, "{a:#x}");
        assert_eq!(unpin(p, 8), EINVAL, "{a:#x}");
        // SAFETY: a null heap descriptor; the area is refused before it is touched.
        assert!(unsafe { init_heap(p, 1 << 20, null_mut()) }.0.is_null(), "{a:#x}");
    }
    for (size, align) in [(0, 0), (-1, 0), (c_int::MIN, 0), (c_int::MAX, 0), (16, -1), (16, 64), (16, c_int::MAX)] {
        assert!(xmalloc(size, align, kernel_heap).0.is_null(), "{size} {align}");
    }
    // A block inside a live block, and one freed twice.
    let p = xmalloc(64, 4, kernel_heap);
    assert!(!p.0.is_null());
    assert_eq!(xmfree(caddr_t(p.0.wrapping_add(1)), kernel_heap), -1);
    assert_eq!(xmfree(p, pinned_heap), -1);
    assert_eq!(xmfree(p, kernel_heap), 0);
    assert_eq!(xmfree(p, kernel_heap), -1);
    check_all_invariants();
}

/// The next structured area of `random_areas_are_answered`.
static NEXT_AREA: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

unsafe extern "C" fn one_region(user: *mut c_void, region: *mut memory_area_t) -> bool {
    // SAFETY: `user` is the test's `(memory_area_t, bool)`, alive for the call.
    let state = unsafe { &mut *user.cast::<(memory_area_t, bool)>() };
    if state.1 {
        state.1 = false;
        return false;
    }
    // SAFETY: memkit passes a valid pointer.
    unsafe { region.write(state.0) };
    state.1 = true;
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Random areas, header regions and a random reserved region: get_header and
    /// init_region answer with a code, and what get_header finds, init_region takes.
    #[test]
    fn random_areas_are_answered(
        structured in any::<bool>(),
        start in any::<u64>(),
        frames in 1u64..512,
        size in any::<u64>(),
        rs in any::<u64>(),
        rsize in any::<u64>(),
    ) {
        let _serial = one_at_a_time();
        // A structured case: an area of its own (1 GiB apart from 2^41 on), a whole number of
        // frames; otherwise anything, made an allocator only inside [2^40, 2^41), clear of
        // the structured areas and of the other tests' areas.
        let area = if structured {
            let n = NEXT_AREA.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            memory_area_t { start: (1 << 41) + (n << 30), size: frames * 4096 }
        } else {
            memory_area_t { start, size }
        };
        let own = structured || (start >= 1 << 40 && start.checked_add(size).is_some_and(|e| e <= 1 << 41));
        let mut state = (memory_area_t { start: rs, size: rsize }, false);
        let user = (&raw mut state).cast::<c_void>();
        let mut hdr = memory_area_t::default();
        // SAFETY: the enumerator and its state are valid for the call.
        let r = unsafe { pmallocator_get_header(area, Some(one_region), user, &mut hdr) };
        prop_assert!([ERR_NONE, ERR_OUT_OF_MEMORY, ERR_NOT_VALID].contains(&r));
        if own {
            // SAFETY: as above.
            let i = unsafe { pmallocator_init_region(area, hdr, Some(one_region), user) };
            prop_assert!([ERR_NONE, ERR_OUT_OF_MEMORY, ERR_NOT_VALID].contains(&i));
            if structured && r == ERR_NONE {
                prop_assert_eq!(i, ERR_NONE, "init takes the header get_header found");
            }
        }
        check_invariants();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Random words as handles, ids, addresses and sizes: every call answers.
    #[test]
    fn random_words_are_answered(cap in any::<u64>(), id in any::<u64>(), addr in any::<usize>(), n in any::<u64>()) {
        let _serial = one_at_a_time();
        let cap = cap as l4_cap_idx_t;
        let _ = l4re_ds_size(cap);
        let _ = l4re_ds_copy_in(cap, n, cap, n, n);
        let _ = l4re_rm_detach(addr as *mut c_void);
        let _ = l4rm_detach(addr as *const c_void);
        let ds = l4dm_dataspace_t { id, manager: MEMKIT_DSM };
        let mut size = 0;
        // SAFETY: valid pointers.
        let _ = unsafe { l4dm_mem_size(&ds, &mut size) };
        let _ = xmfree(caddr_t(addr as *mut _), caddr_t(n as usize as *mut _));
        let _ = pin(caddr_t(addr as *mut _), n as c_int);
        let area = memory_area_t { start: n, size: id };
        let mut out = memory_area_t::default();
        // SAFETY: a valid out-pointer.
        let _ = unsafe { pmallocator_allocate((n % 256) as u8, area, &mut out) };
        let _ = pmallocator_free(area, area);
        let mut start = addr as *mut c_void;
        // SAFETY: a valid in/out pointer.
        let _ = unsafe { l4re_rm_attach(&mut start, n as _, id as u32, cap, n, (id >> 56) as u8) };
        let _ = l4re_ma_alloc_srv(cap, n as _, id as _, n >> 32);
        let _ = l4re_ma_free_srv(cap, id as _);
        let _ = l4_error(l4_factory_create_factory(cap, id as _, n as _));
        let _ = l4rm_area_release(n as u32);
        let _ = l4rm_area_release_addr(addr as *const c_void);
        let mut list = [l4re_rm_range_t::default(); 8];
        // SAFETY: an array of 8.
        let got = unsafe { l4re_rm_get_regions(addr as _, list.as_mut_ptr(), (n % 9) as _) };
        prop_assert!((0..=8).contains(&got));
        // SAFETY: as above.
        let got = unsafe { l4re_rm_get_areas(addr as _, list.as_mut_ptr(), (n % 9) as _) };
        prop_assert!((0..=8).contains(&got));
        let mut out = L4DM_INVALID_DATASPACE;
        // SAFETY: valid pointers.
        let _ = unsafe { l4dm_share(&ds, MEMKIT_CLIENT, n as u32, &mut out) };
        let mut at: *mut c_void = null_mut();
        // SAFETY: valid pointers.
        let _ = unsafe { l4rm_area_attach(&ds, id as u32, n as _, n as _, (n >> 32) as u32, &mut at) };
        // SAFETY: a valid pointer.
        let _ = unsafe { l4rm_area_attach_to_region(&ds, id as u32, addr as *const c_void, n as _, 0, n as u32) };
        let (mut a, mut area) = (0, 0);
        // SAFETY: valid pointers.
        if unsafe { l4rm_area_reserve_region(addr as _, n as _, (n >> 40) as u32, &mut area) } == 0 {
            prop_assert_eq!(l4rm_area_release(area), 0);
        }
        // SAFETY: valid pointers.
        if unsafe { l4rm_area_reserve(n as _, id as u32, &mut a, &mut area) } == 0 {
            prop_assert_eq!(l4rm_area_release_addr(a as *const c_void), 0);
        }
        prop_assert_eq!(memkit_init(), 0);
        check_invariants();
    }
}
