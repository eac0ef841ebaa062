//! A hostile caller: zero sizes, sizes no source can hold, alignments at and beyond a page
//! and beyond the largest, bad frees of every kind, reallocation at the edges, exhaustion
//! and recovery. Every refusal is an error naming the cause; nothing changes then.

mod common;
use common::FreeOwned;

use std::ptr::NonNull;

use memkit_heap::{FitPolicy, Heap, MAX_ALIGN_LOG2, ReallocError, RegionPageSource, SingleCpu};
use memkit_heap::{XmallocError, XmfreeError};
use memkit_types::{PAGE_SIZE, VirtAddr};

const FIT_POLICIES: [FitPolicy; 3] = [FitPolicy::SizeClasses, FitPolicy::ExactFit, FitPolicy::Adaptive];

fn heap(bytes: usize, fit_policy: FitPolicy) -> Heap<RegionPageSource> {
    let mem: &'static mut [u8] = vec![0u8; bytes].leak();
    // SAFETY: leaked memory, used only by this source, valid for 'static.
    let src = unsafe { RegionPageSource::new(NonNull::new(mem.as_mut_ptr()).unwrap(), mem.len()) }.unwrap();
    let h = Heap::with_fit_policy(src, SingleCpu, false, fit_policy);
    h.init().unwrap();
    h
}

/// [`Heap::realloc`] of a block the test owns (or of a bad pointer, refused).
fn realloc(h: &Heap<RegionPageSource>, p: NonNull<u8>, size: usize) -> Result<NonNull<u8>, ReallocError> {
    // SAFETY: the tests' blocks are their own, used through raw pointers only and untouched
    // during the call; other pointers are refused.
    unsafe { h.realloc(p, size) }
}

/// [`Heap::realloc_aligned`] of a block the test owns.
fn realloc_to(
    h: &Heap<RegionPageSource>,
    p: NonNull<u8>,
    size: usize,
    align_log2: u32,
) -> Result<NonNull<u8>, ReallocError> {
    // SAFETY: as in `realloc`.
    unsafe { h.realloc_aligned(p, size, align_log2) }
}

fn va(p: NonNull<u8>) -> VirtAddr {
    VirtAddr::new(p.as_ptr() as usize)
}

#[test]
fn sizes_and_alignments_at_the_edges() {
    for fit_policy in FIT_POLICIES {
        let h = heap(2 << 20, fit_policy);
        let total = h.source().total_pages().get() * PAGE_SIZE;
        // Zero bytes: a real block, freed like any other.
        let z = h.allocate(0, 0).unwrap();
        assert!(h.block(z).unwrap().usable > 0);
        for size in [usize::MAX, usize::MAX - PAGE_SIZE, isize::MAX as usize, total + 1, total] {
            assert!(
                matches!(h.allocate(size, 0), Err(XmallocError::TooLarge(_) | XmallocError::NoMemory(_))),
                "{fit_policy:?} {size}"
            );
            h.check_invariants();
        }
        for align in [MAX_ALIGN_LOG2 + 1, 40, 63, 64, u32::MAX] {
            assert_eq!(h.allocate(16, align), Err(XmallocError::BadAlignment(align)));
        }
        // Every alignment up to and beyond a page that the source can serve.
        let mut live = vec![z];
        for align in 0..=16 {
            for size in [1, 17, 255, 4095, 4096, 4097, 40_000] {
                if let Ok(p) = h.allocate(size, align) {
                    assert_eq!(p.as_ptr() as usize % (1 << align), 0, "{fit_policy:?} {size} 2^{align}");
                    assert!(h.block(p).unwrap().usable >= size);
                    live.push(p);
                }
                h.check_invariants();
            }
        }
        assert!(h.allocate(4096, 24).is_err(), "a 16 MiB-aligned block from 2 MiB");
        for p in live {
            h.free_owned(p).unwrap();
        }
        h.check_invariants();
        h.trim();
        assert_eq!((h.stats().pages, h.bytes_in_use()), (0, 0));
    }
}

#[test]
fn bad_frees_are_refused_and_change_nothing() {
    for fit_policy in FIT_POLICIES {
        let h = heap(2 << 20, fit_policy);
        let other = heap(1 << 20, fit_policy);
        let small = h.allocate(100, 3).unwrap();
        let mid = h.allocate(3000, 3).unwrap();
        let large = h.allocate(100_000, 3).unwrap();
        let foreign = other.allocate(100, 3).unwrap();
        let before = h.stats();
        let on_stack = 0u64;
        let stack = NonNull::from(&on_stack).cast::<u8>();
        assert_eq!(h.free_owned(stack), Err(XmfreeError::NotOwned(va(stack))));
        assert_eq!(h.free_owned(foreign), Err(XmfreeError::NotOwned(va(foreign))));
        let top = NonNull::new(std::ptr::without_provenance_mut(usize::MAX)).unwrap();
        assert_eq!(h.free_owned(top), Err(XmfreeError::NotOwned(va(top))));
        // A pointer no address space can hold is refused, not a panic.
        let wild_addr = 0x0000_8000_0000_0000usize;
        let wild = NonNull::new(std::ptr::without_provenance_mut(wild_addr)).unwrap();
        assert_eq!(h.free_owned(wild), Err(XmfreeError::NonCanonical(wild_addr)));
        for block in [small, mid, large] {
            for offset in [1, 8, 63, 64, 99] {
                let inside = NonNull::new(block.as_ptr().wrapping_add(offset)).unwrap();
                assert!(
                    matches!(h.free_owned(inside), Err(XmfreeError::NotBlockStart(_) | XmfreeError::NotAllocated(_))),
                    "{fit_policy:?} +{offset}"
                );
            }
        }
        assert_eq!(h.stats(), before);
        h.check_invariants();
        for block in [small, mid, large] {
            h.free_owned(block).unwrap();
            assert!(h.free_owned(block).is_err(), "double free accepted");
            h.check_invariants();
        }
        other.free_owned(foreign).unwrap();
        h.trim();
        assert_eq!((h.stats().pages, h.bytes_in_use()), (0, 0));
    }
}

#[test]
fn realloc_at_the_edges() {
    for fit_policy in FIT_POLICIES {
        let h = heap(2 << 20, fit_policy);
        let p = h.allocate(100, 6).unwrap();
        // SAFETY: a fresh 100-byte block.
        unsafe { p.as_ptr().write_bytes(0x5a, 100) };
        let same = realloc(&h, p, 90).unwrap();
        assert_eq!(same, p);
        let shrunk = realloc(&h, p, 0).unwrap();
        assert_eq!(shrunk.as_ptr() as usize % 64, 0);
        let p = shrunk;
        assert!(matches!(realloc(&h, p, usize::MAX), Err(ReallocError::Allocate(_))));
        assert!(matches!(realloc(&h, p, 4 << 20), Err(ReallocError::Allocate(_))));
        h.check_invariants();
        let grown = realloc(&h, p, 50_000).unwrap();
        assert_eq!(grown.as_ptr() as usize % 64, 0);
        let inside = NonNull::new(grown.as_ptr().wrapping_add(16)).unwrap();
        assert!(matches!(realloc(&h, inside, 10), Err(ReallocError::Free(_))));
        h.free_owned(grown).unwrap();
        assert!(matches!(realloc(&h, grown, 10), Err(ReallocError::Free(_))));
        h.check_invariants();
        h.trim();
        assert_eq!((h.stats().pages, h.bytes_in_use()), (0, 0));
    }
}

#[test]
fn exhaustion_and_recovery() {
    for fit_policy in FIT_POLICIES {
        let h = heap(1 << 20, fit_policy);
        for round in 0..3 {
            let mut live = Vec::new();
            let mut i = 0usize;
            loop {
                match h.allocate(16 + i * 97 % 6000, (i % 7) as u32) {
                    Ok(p) => live.push(p),
                    Err(XmallocError::NoMemory(_)) => break,
                    Err(e) => panic!("{e}"),
                }
                i += 1;
            }
            h.check_invariants();
            assert!(live.len() > 100, "{fit_policy:?} round {round}: {}", live.len());
            // Everything comes back, and the heap serves as much again.
            for p in live {
                h.free_owned(p).unwrap();
            }
            h.check_invariants();
            h.trim();
            assert_eq!((h.stats().pages, h.bytes_in_use()), (0, 0), "{fit_policy:?} round {round}");
        }
    }
}

/// Fills `len` bytes at `p` with a pattern of `seed`.
fn fill(p: NonNull<u8>, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: `p` is a live block of at least `len` bytes the test owns.
        unsafe { p.as_ptr().wrapping_add(i).write(seed.wrapping_add(i as u8)) };
    }
}

/// Whether the first `len` bytes at `p` still hold the pattern of `seed`.
fn holds(p: NonNull<u8>, len: usize, seed: u8) -> bool {
    // SAFETY: `p` is a live block of at least `len` bytes the test owns.
    (0..len).all(|i| unsafe { p.as_ptr().wrapping_add(i).read() } == seed.wrapping_add(i as u8))
}

#[test]
fn realloc_grows_and_shrinks_in_place_where_the_layout_allows() {
    // An arena block grows into the free block after it and gives its tail back.
    let h = heap(4 << 20, FitPolicy::ExactFit);
    let p = h.allocate(1000, 0).unwrap();
    fill(p, 1000, 1);
    let before = h.bytes_in_use();
    assert_eq!(realloc(&h, p, 3000).unwrap(), p);
    assert!(holds(p, 1000, 1));
    assert_eq!(h.block(p).unwrap().usable, 3008);
    assert_eq!(h.bytes_in_use(), before + 3008 - 1024);
    h.check_invariants();
    // A neighbour after it stops the growth: the block moves, its contents with it.
    let q = h.allocate(1000, 0).unwrap();
    fill(p, 3000, 2);
    let moved = realloc(&h, p, 6000).unwrap();
    assert_ne!(moved, p);
    assert!(holds(moved, 3000, 2));
    h.check_invariants();
    assert_eq!(realloc(&h, moved, 300).unwrap(), moved);
    assert!(holds(moved, 300, 2));
    assert_eq!(h.block(moved).unwrap().usable, 320);
    h.check_invariants();
    h.free_owned(moved).unwrap();
    h.free_owned(q).unwrap();
    h.check_invariants();
    assert_eq!(h.bytes_in_use(), 0);

    // A large block grows into the pages after it, and gives its last pages back.
    for placement in FIT_POLICIES {
        let h = heap(4 << 20, placement);
        let p = h.allocate(40_000, 0).unwrap();
        fill(p, 40_000, 3);
        assert_eq!(realloc(&h, p, 200_000).unwrap(), p);
        assert_eq!(h.stats().large_grown, 1);
        assert_eq!(h.block(p).unwrap().usable, 200_000usize.div_ceil(PAGE_SIZE) * PAGE_SIZE);
        assert!(holds(p, 40_000, 3));
        h.check_invariants();
        assert_eq!(realloc(&h, p, 50_000).unwrap(), p);
        assert_eq!(h.block(p).unwrap().usable, 13 * PAGE_SIZE);
        assert_eq!(h.stats().pages, 13);
        h.check_invariants();
        // The pages given back serve others; a block after it stops the growth.
        let q = h.allocate(40_000, 0).unwrap();
        let moved = realloc(&h, p, 120_000).unwrap();
        assert_ne!(moved, p);
        assert!(holds(moved, 40_000, 3));
        h.check_invariants();
        // Small again: it moves to a class block (or an arena block).
        let small = realloc(&h, moved, 100).unwrap();
        assert_ne!(small, moved);
        assert!(holds(small, 100, 3));
        assert!(h.block(small).unwrap().usable < PAGE_SIZE);
        h.free_owned(small).unwrap();
        h.free_owned(q).unwrap();
        h.trim();
        h.check_invariants();
        assert_eq!((h.stats().pages, h.bytes_in_use()), (0, 0));
    }

    // A class block that grows moves with room to grow again in place.
    let h = heap(4 << 20, FitPolicy::SizeClasses);
    let p = h.allocate(608, 0).unwrap();
    fill(p, 608, 4);
    let q = realloc_to(&h, p, 736, 3).unwrap();
    assert!(h.block(q).unwrap().usable >= 736 + 368);
    assert_eq!(realloc_to(&h, q, 864, 3).unwrap(), q);
    assert_eq!(realloc_to(&h, q, 1024, 3).unwrap(), q);
    assert!(holds(q, 608, 4));
    // Asked for more alignment than its address has, it moves to a block that has it.
    let r = realloc_to(&h, q, 1024, 13).unwrap();
    assert_eq!(r.as_ptr() as usize % (1 << 13), 0);
    assert!(holds(r, 608, 4));
    assert!(matches!(realloc_to(&h, r, 10, 40), Err(ReallocError::Allocate(XmallocError::BadAlignment(40)))));
    h.free_owned(r).unwrap();
    h.check_invariants();
}
