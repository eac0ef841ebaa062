//! The allocators behind `pmallocator_*` against a plain model: the set of allocated
//! frames. An allocation succeeds exactly when the model has a free, naturally aligned
//! block of that order (and returns one), a free exactly when the block is naturally
//! aligned and all its frames are allocated; the invariants are checked after every call.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use memkit::pmallocator::*;
use memkit::state::{check_all_invariants, check_invariants};
use memkit::types::memory_area_t;
use proptest::prelude::*;

const FRAME: u64 = 4096;
/// The areas: 256 frames each, a new one per case (allocators' areas may not overlap, and
/// the seed has no call that ends an allocator), from 4 GiB on.
static NEXT_CASE: AtomicU64 = AtomicU64::new(0);
const AREAS: u64 = 1 << 32;
const FRAMES: u64 = 256;

#[derive(Debug, Clone)]
enum Op {
    Allocate(u8),
    /// Free the `n`th allocated block (or a block made up from it, see `Mangle`).
    Free(usize, Mangle),
}

#[derive(Debug, Clone, Copy)]
enum Mangle {
    Exact,
    /// Its first half (allowed when the block has two frames or more).
    Half,
    /// Shifted by one frame (never a natural block of the same size).
    Shift,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6).prop_map(Op::Allocate),
        1 => Just(Op::Allocate(9)),
        2 => (any::<usize>(), prop_oneof![Just(Mangle::Exact), Just(Mangle::Half), Just(Mangle::Shift)])
            .prop_map(|(n, m)| Op::Free(n, m)),
    ]
}

/// Frames (numbers relative to `base`) of the header and the reserved regions.
fn blocked(base: u64, header: memory_area_t, reserved: &[memory_area_t]) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for r in std::iter::once(&header).chain(reserved) {
        let first = r.start.saturating_sub(base) / FRAME;
        let end = (r.start + r.size - base).div_ceil(FRAME);
        out.extend(first..end.min(FRAMES));
    }
    out
}

unsafe extern "C" fn enumerate(user: *mut core::ffi::c_void, out: *mut memory_area_t) -> bool {
    // SAFETY: `user` is the test's `(Vec<memory_area_t>, usize)`, alive for the call.
    let (list, next) = unsafe { &mut *user.cast::<(Vec<memory_area_t>, usize)>() };
    if *next == list.len() {
        *next = 0;
        return false;
    }
    // SAFETY: memkit passes a valid pointer.
    unsafe { out.write(list[*next]) };
    *next += 1;
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn allocators_match_the_model(
        holes in proptest::collection::vec((0u64..FRAMES, 1u64..3 * FRAME), 0..4),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let base = AREAS + NEXT_CASE.fetch_add(1, Ordering::Relaxed) * FRAMES * FRAME;
        let area = memory_area_t { start: base, size: FRAMES * FRAME };
        let reserved: Vec<memory_area_t> =
            holes.iter().map(|&(f, len)| memory_area_t { start: base + f * FRAME + 17, size: len }).collect();
        let mut en = (reserved.clone(), 0usize);
        let user = (&raw mut en).cast::<core::ffi::c_void>();
        let mut header = memory_area_t::default();
        // SAFETY: the enumerator and its state are valid for the call.
        let r = unsafe { pmallocator_get_header(area, Some(enumerate), user, &mut header) };
        if r != ERR_NONE {
            prop_assert_eq!(r, ERR_OUT_OF_MEMORY);
            return Ok(());
        }
        // SAFETY: as above.
        prop_assert_eq!(unsafe { pmallocator_init_region(area, header, Some(enumerate), user) }, ERR_NONE);
        let blocked = blocked(base, header, &reserved);
        let mut used: BTreeSet<u64> = BTreeSet::new();
        let mut blocks: Vec<(u64, u64)> = Vec::new();
        for o in ops {
            match o {
                Op::Allocate(order) => {
                    let n = 1u64 << order;
                    let fits = (0..FRAMES / n)
                        .map(|b| b * n)
                        .any(|s| (s..s + n).all(|f| !used.contains(&f) && !blocked.contains(&f)));
                    let mut out = memory_area_t::default();
                    // SAFETY: a valid out-pointer.
                    let r = unsafe { pmallocator_allocate(order, header, &mut out) };
                    if 1u64 << order > FRAMES {
                        prop_assert_eq!(r, ERR_NOT_VALID);
                    } else if fits {
                        prop_assert_eq!(r, ERR_NONE);
                        prop_assert_eq!(out.size, n * FRAME);
                        let s = (out.start - base) / FRAME;
                        prop_assert_eq!(s % n, 0, "naturally aligned");
                        for f in s..s + n {
                            prop_assert!(!blocked.contains(&f) && used.insert(f), "frame {} given twice", f);
                        }
                        blocks.push((s, n));
                    } else {
                        prop_assert_eq!(r, ERR_PHYSICAL_MEMORY_FULL);
                    }
                }
                Op::Free(i, m) => {
                    if blocks.is_empty() {
                        continue;
                    }
                    let i = i % blocks.len();
                    let (s, n) = blocks[i];
                    let (fs, fnum) = match m {
                        Mangle::Exact => (s, n),
                        Mangle::Half if n > 1 => (s, n / 2),
                        Mangle::Half => (s, n),
                        // One frame over is another block's frame: the model names blocks, not
                        // frames, so a single frame is not shifted.
                        Mangle::Shift if n == 1 => continue,
                        Mangle::Shift => (s + 1, n),
                    };
                    let ok = fs % fnum == 0
                        && fs + fnum <= FRAMES
                        && (fs..fs + fnum).all(|f| used.contains(&f));
                    let area = memory_area_t { start: base + fs * FRAME, size: fnum * FRAME };
                    let r = pmallocator_free(area, header);
                    prop_assert_eq!(r == ERR_NONE, ok, "free of {:?} from block {:?}", (fs, fnum), (s, n));
                    if ok {
                        for f in fs..fs + fnum {
                            used.remove(&f);
                        }
                        blocks.remove(i);
                        // The rest of a halved block stays allocated as a block of its own.
                        if fnum < n {
                            blocks.push((fs + fnum, n - fnum));
                        }
                    } else {
                        prop_assert_eq!(r, ERR_NOT_VALID);
                    }
                }
            }
            check_invariants();
        }
    }
}

#[test]
fn system_invariants_hold_after_the_model() {
    check_all_invariants();
}
