//! The malloc family called directly (in unit tests nothing is exported, so the test
//! process keeps its own allocator and these calls reach memkit's heap only): C semantics,
//! edges, foreign pointers, the nested path, threads, and random calls against a model.
//! Every test holds `SERIAL`, so that the heap's invariant checker sees a quiet heap.

use std::sync::Mutex;

use proptest::prelude::*;

use super::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn fill(p: *mut c_void, len: usize, seed: u8) {
    // SAFETY: callers pass a live block of at least `len` bytes.
    unsafe { p.cast::<u8>().write_bytes(seed, len) };
}

fn holds(p: *mut c_void, len: usize, seed: u8) -> bool {
    // SAFETY: callers pass a live block of at least `len` bytes.
    let s = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
    s.iter().all(|&b| b == seed)
}

#[test]
fn blocks_are_aligned_usable_and_distinct() {
    let _s = serial();
    let mut live = Vec::new();
    for size in [0usize, 1, 15, 16, 17, 100, 255, 4096, 4097, 32 * 1024, 32 * 1024 + 1, 1 << 20, 5 << 20] {
        // SAFETY: plain C calls.
        let p = unsafe { malloc(size) };
        assert!(!p.is_null(), "malloc({size})");
        assert!(p.addr().is_multiple_of(16), "malloc({size}) aligned to 16");
        // SAFETY: a live block.
        let usable = unsafe { malloc_usable_size(p) };
        assert!(usable >= size.max(1), "usable {usable} for {size}");
        fill(p, usable, size as u8);
        live.push((p, usable, size as u8));
    }
    for &(p, usable, seed) in &live {
        assert!(holds(p, usable, seed), "blocks overlap");
    }
    check();
    for (p, _, _) in live {
        // SAFETY: ours, freed once.
        unsafe { free(p) };
    }
    check();
}

#[test]
fn failures_set_enomem_and_overflows_are_caught() {
    let _s = serial();
    set_errno(0);
    // SAFETY: plain C calls.
    assert!(unsafe { malloc(usize::MAX) }.is_null());
    assert_eq!(errno(), libc::ENOMEM);
    set_errno(0);
    // More than the whole reservation.
    // SAFETY: as above.
    assert!(unsafe { malloc(ram::RESERVE + 1) }.is_null());
    assert_eq!(errno(), libc::ENOMEM);
    set_errno(0);
    // SAFETY: as above.
    assert!(unsafe { calloc(usize::MAX / 2, 3) }.is_null());
    assert_eq!(errno(), libc::ENOMEM);
    // SAFETY: as above.
    let p = unsafe { malloc(10) };
    fill(p, 10, 7);
    set_errno(0);
    // SAFETY: `p` is live; the call fails and keeps it.
    assert!(unsafe { reallocarray(p, usize::MAX, 2) }.is_null());
    assert_eq!(errno(), libc::ENOMEM);
    set_errno(0);
    // SAFETY: as above.
    assert!(unsafe { realloc(p, usize::MAX - 8) }.is_null());
    assert_eq!(errno(), libc::ENOMEM);
    assert!(holds(p, 10, 7), "a failed realloc keeps the block");
    // SAFETY: live, freed once.
    unsafe { free(p) };
    // SAFETY: as above.
    assert!(unsafe { pvalloc(usize::MAX) }.is_null());
    check();
}

#[test]
fn calloc_zeroes_reused_memory() {
    let _s = serial();
    for size in [24usize, 1000, 40_000, 3 << 20] {
        // SAFETY: plain C calls on blocks of ours.
        let p = unsafe { malloc(size) };
        fill(p, size, 0xee);
        // SAFETY: as above.
        unsafe { free(p) };
        // SAFETY: as above.
        let q = unsafe { calloc(1, size) };
        assert!(holds(q, size, 0), "calloc({size}) is zero");
        // SAFETY: as above.
        unsafe { free(q) };
    }
    // SAFETY: as above; zero elements.
    let z = unsafe { calloc(0, 8) };
    assert!(!z.is_null());
    // SAFETY: as above.
    unsafe { free(z) };
}

#[test]
fn realloc_follows_c() {
    let _s = serial();
    // SAFETY: plain C calls on blocks of ours.
    let p = unsafe { realloc(null_mut(), 40) };
    assert!(!p.is_null());
    fill(p, 40, 3);
    let mut q = p;
    for size in [41usize, 400, 5000, 70_000, 2 << 20, 100, 8] {
        // SAFETY: `q` is live and ours.
        let r = unsafe { realloc(q, size) };
        assert!(!r.is_null());
        assert!(holds(r, size.min(40), 3), "realloc to {size} keeps the contents");
        // SAFETY: as above.
        assert!(unsafe { malloc_usable_size(r) } >= size);
        q = r;
    }
    // realloc(p, 0) frees and returns null.
    // SAFETY: as above.
    assert!(unsafe { realloc(q, 0) }.is_null());
    check();
    // SAFETY: as above.
    let a = unsafe { reallocarray(null_mut(), 10, 10) };
    // SAFETY: as above.
    assert!(unsafe { malloc_usable_size(a) } >= 100);
    // SAFETY: as above.
    unsafe { free(a) };
}

#[test]
fn alignment_rules() {
    let _s = serial();
    let mut out = null_mut();
    for bad in [0usize, 1, 2, 4, 3, 12, 24, 48] {
        // SAFETY: `out` is a valid pointer slot.
        assert_eq!(unsafe { posix_memalign(&mut out, bad, 10) }, libc::EINVAL, "align {bad}");
    }
    set_errno(1234);
    for align in [8usize, 16, 64, 4096, 1 << 16, 1 << 21] {
        for size in [0usize, 1, 100, 5000, 300_000] {
            // SAFETY: as above.
            assert_eq!(unsafe { posix_memalign(&mut out, align, size) }, 0);
            assert!(out.addr().is_multiple_of(align), "posix_memalign({align}, {size})");
            // SAFETY: a live block of ours.
            assert!(unsafe { malloc_usable_size(out) } >= size);
            fill(out, size, 1);
            // SAFETY: as above.
            unsafe { free(out) };
        }
    }
    assert_eq!(errno(), 1234, "posix_memalign leaves errno alone");
    let before = out;
    // SAFETY: as above.
    assert_eq!(unsafe { posix_memalign(&mut out, 1 << 40, 1) }, libc::ENOMEM);
    assert_eq!(out, before, "*memptr untouched on failure");
    set_errno(0);
    // SAFETY: plain C calls.
    assert!(unsafe { aligned_alloc(24, 48) }.is_null());
    assert_eq!(errno(), libc::EINVAL);
    // SAFETY: as above.
    assert!(unsafe { aligned_alloc(0, 48) }.is_null());
    for (align, want) in [(1usize, 16usize), (48, 64), (64, 64), (4000, 4096), (1 << 20, 1 << 20)] {
        // SAFETY: as above.
        let p = unsafe { memalign(align, 33) };
        assert!(p.addr().is_multiple_of(want), "memalign({align})");
        // SAFETY: as above.
        unsafe { free(p) };
        // SAFETY: as above.
        let q = unsafe { aligned_alloc(want, 33) };
        assert!(q.addr().is_multiple_of(want), "aligned_alloc({want})");
        // SAFETY: as above.
        unsafe { free(q) };
    }
    set_errno(0);
    // SAFETY: as above.
    assert!(unsafe { memalign(usize::MAX, 1) }.is_null());
    assert_eq!(errno(), libc::EINVAL);
    // SAFETY: as above.
    let v = unsafe { valloc(1) };
    assert!(v.addr().is_multiple_of(PAGE));
    // SAFETY: as above.
    let pv = unsafe { pvalloc(0) };
    assert!(pv.addr().is_multiple_of(PAGE));
    // SAFETY: as above.
    assert!(unsafe { malloc_usable_size(pv) } >= PAGE);
    // SAFETY: as above.
    let pv2 = unsafe { pvalloc(PAGE + 1) };
    // SAFETY: as above.
    assert!(unsafe { malloc_usable_size(pv2) } >= 2 * PAGE);
    for p in [v, pv, pv2] {
        // SAFETY: as above.
        unsafe { free(p) };
    }
    check();
}

#[test]
fn foreign_and_bad_pointers_are_ignored() {
    let _s = serial();
    // SAFETY: the process's own allocator (not ours in unit tests).
    let theirs = unsafe { libc::malloc(64) };
    let mut local = [0u64; 4];
    let on_stack = local.as_mut_ptr().cast::<c_void>();
    for p in [theirs, on_stack, null_mut()] {
        // SAFETY: not ours: ignored.
        unsafe { free(p) };
        // SAFETY: as above.
        assert_eq!(unsafe { malloc_usable_size(p) }, 0);
    }
    set_errno(0);
    // SAFETY: as above: refused, nothing touched.
    assert!(unsafe { realloc(theirs, 100) }.is_null());
    assert_eq!(errno(), libc::ENOMEM);
    // SAFETY: still the process's own block.
    unsafe { libc::free(theirs) };
    // Inside a block, and a double free: the heap refuses both.
    // SAFETY: plain C calls.
    let p = unsafe { malloc(100) };
    // SAFETY: a pointer into our block: refused.
    unsafe { free(p.cast::<u8>().wrapping_add(16).cast()) };
    // SAFETY: ours.
    unsafe { free(p) };
    // SAFETY: freed already: refused.
    unsafe { free(p) };
    check();
    // SAFETY: plain C call; the heap still works.
    let q = unsafe { malloc(100) };
    assert!(!q.is_null());
    // SAFETY: ours.
    unsafe { free(q) };
    assert_eq!(local[0], 0);
}

#[test]
fn the_nested_path_takes_no_heap_lock() {
    let _s = serial();
    // SAFETY: plain C call.
    let outer = unsafe { malloc(200) };
    fill(outer, 200, 9);
    // Inside the family, as a signal handler that interrupted malloc would be.
    let inside = gate::enter();
    assert!(matches!(inside, Entry::Entered(_)));
    // SAFETY: plain C calls on the nested path.
    let p = unsafe { malloc(1000) };
    assert!(!p.is_null() && !in_heap(p.addr()));
    assert!(p.addr().is_multiple_of(16));
    // SAFETY: as above.
    assert!(unsafe { malloc_usable_size(p) } >= 1000);
    fill(p, 1000, 1);
    // SAFETY: as above.
    let a = unsafe { memalign(1 << 16, 10) };
    assert!(a.addr().is_multiple_of(1 << 16));
    // SAFETY: as above.
    let p2 = unsafe { realloc(p, 5000) };
    assert!(holds(p2, 1000, 1));
    // A heap block: its size needs the heap's locks.
    set_errno(0);
    // SAFETY: as above.
    assert!(unsafe { realloc(outer, 5000) }.is_null());
    assert_eq!(errno(), libc::ENOMEM);
    // SAFETY: as above.
    assert_eq!(unsafe { malloc_usable_size(outer) }, 0);
    // Its free waits for the next call that enters the heap.
    // SAFETY: as above.
    unsafe { free(outer) };
    // SAFETY: as above: the nested blocks are unmapped.
    unsafe { free(a) };
    drop(inside);
    // A nested block survives the handler and moves to the heap on realloc.
    assert!(holds(p2, 1000, 1));
    // SAFETY: a nested block of ours.
    let h = unsafe { realloc(p2, 6000) };
    assert!(in_heap(h.addr()) && holds(h, 1000, 1));
    assert!(!nested::owns(p2.addr()));
    // SAFETY: ours.
    unsafe { free(h) };
    check();
}

#[test]
fn threads_allocate_and_free_across_each_other() {
    let _s = serial();
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..20_000usize {
                    let size = 1 + (i * 7919 + t * 31) % 3000;
                    // SAFETY: plain C calls on blocks of ours.
                    let p = unsafe { malloc(size) };
                    assert!(!p.is_null());
                    fill(p, size.min(64), t as u8);
                    if i % 3 == 0 {
                        tx.send(p.expose_provenance()).unwrap();
                    } else {
                        mine.push((p, size));
                    }
                    if mine.len() > 100 {
                        let (q, s) = mine.swap_remove(i % mine.len());
                        assert!(holds(q, s.min(64), t as u8));
                        // SAFETY: as above.
                        unsafe { free(q) };
                    }
                }
                for (q, _) in mine {
                    // SAFETY: as above.
                    unsafe { free(q) };
                }
            })
        })
        .collect();
    drop(tx);
    let consumer = std::thread::spawn(move || {
        for p in rx {
            // SAFETY: blocks the producers handed over.
            unsafe { free(core::ptr::with_exposed_provenance_mut(p)) };
        }
    });
    for p in producers {
        p.join().unwrap();
    }
    consumer.join().unwrap();
    check();
}

#[test]
fn memory_grows_past_the_first_chunk() {
    let _s = serial();
    let size = 48 << 20;
    // SAFETY: plain C calls on blocks of ours.
    let a = unsafe { malloc(size) };
    // SAFETY: as above.
    let b = unsafe { malloc(size) };
    assert!(!a.is_null() && !b.is_null());
    assert!(stats().committed >= 2 * ram::CHUNK);
    fill(a, size, 1);
    fill(b, size, 2);
    assert!(holds(a, size, 1));
    // SAFETY: as above.
    unsafe { free(a) };
    // SAFETY: as above.
    unsafe { free(b) };
    check();
}

#[derive(Debug, Clone)]
enum Op {
    Malloc(usize),
    Calloc(usize, usize),
    Memalign(u32, usize),
    Realloc(usize, usize),
    Free(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![0usize..64, 0usize..5000, 0usize..300_000];
    prop_oneof![
        size.clone().prop_map(Op::Malloc),
        (0usize..40, 0usize..100).prop_map(|(n, s)| Op::Calloc(n, s)),
        (0u32..17, size.clone()).prop_map(|(a, s)| Op::Memalign(a, s)),
        (any::<usize>(), size).prop_map(|(i, s)| Op::Realloc(i, s)),
        any::<usize>().prop_map(Op::Free),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Random calls against a model of the live blocks: each block is aligned, holds its
    /// size, keeps its contents (a pattern per block) and overlaps no other.
    #[test]
    fn random_calls_match_a_model(ops in proptest::collection::vec(op(), 1..100)) {
        let _s = serial();
        let mut live: Vec<(*mut c_void, usize, u8, usize)> = Vec::new();
        for (k, o) in ops.into_iter().enumerate() {
            let seed = k as u8;
            let new = match o {
                // SAFETY: plain C calls on blocks of ours.
                Op::Malloc(s) => Some((unsafe { malloc(s) }, s, 16)),
                Op::Calloc(n, s) => {
                    // SAFETY: as above.
                    let p = unsafe { calloc(n, s) };
                    prop_assert!(holds(p, n * s, 0));
                    Some((p, n * s, 16))
                }
                // SAFETY: as above.
                Op::Memalign(a, s) => Some((unsafe { memalign(1 << a, s) }, s, (1usize << a).max(16))),
                Op::Realloc(i, s) if !live.is_empty() => {
                    let (p, old, pat, align) = live.swap_remove(i % live.len());
                    // SAFETY: as above.
                    let r = unsafe { realloc(p, s) };
                    if s == 0 {
                        prop_assert!(r.is_null());
                        None
                    } else {
                        prop_assert!(holds(r, old.min(s), pat));
                        fill(r, s, seed);
                        live.push((r, s, seed, if align > 16 && r == p { align } else { 16 }));
                        None
                    }
                }
                Op::Free(i) if !live.is_empty() => {
                    let (p, s, pat, _) = live.swap_remove(i % live.len());
                    prop_assert!(holds(p, s, pat));
                    // SAFETY: as above.
                    unsafe { free(p) };
                    None
                }
                _ => None,
            };
            if let Some((p, s, align)) = new {
                prop_assert!(!p.is_null());
                prop_assert!(p.addr().is_multiple_of(align));
                // SAFETY: as above.
                let usable = unsafe { malloc_usable_size(p) };
                prop_assert!(usable >= s);
                fill(p, s, seed);
                live.push((p, s, seed, align));
            }
            check();
        }
        let mut spans: Vec<(usize, usize)> = live.iter().map(|&(p, s, _, _)| (p.addr(), s.max(1))).collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            prop_assert!(w[0].0 + w[0].1 <= w[1].0, "blocks overlap");
        }
        for (p, s, pat, _) in live {
            prop_assert!(holds(p, s, pat));
            // SAFETY: as above.
            unsafe { free(p) };
        }
        check();
    }
}

/// Waits up to 30 seconds for the child `pid`; its exit status, or `None` when it hung (it is
/// killed then).
fn wait_child(pid: libc::pid_t) -> Option<i32> {
    // A healthy child ends within milliseconds; a deadlocked one never does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut status = 0;
        // SAFETY: our own child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 });
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn a_fork_while_threads_allocate_leaves_the_child_a_whole_heap() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    static STOP: AtomicBool = AtomicBool::new(false);
    let _s = serial();
    STOP.store(false, Relaxed);
    // Threads that allocate, grow and free every kind of block (class, arena, large) and
    // free each other's, so that a fork finds some of them inside the heap.
    let workers: Vec<_> = (0..3usize)
        .map(|t| {
            std::thread::spawn(move || {
                let mut held: Vec<(usize, usize)> = Vec::new();
                let mut i = t;
                while !STOP.load(Relaxed) {
                    i += 1;
                    let size = [24, 200, 3000, 20_000, 300_000][i % 5] + i % 97;
                    // SAFETY: plain C calls on blocks of ours.
                    let p = unsafe { malloc(size) };
                    assert!(!p.is_null());
                    fill(p, size.min(256), t as u8);
                    held.push((p.expose_provenance(), size));
                    if held.len() > 40 {
                        let (q, s) = held.swap_remove(i % held.len());
                        let q = core::ptr::with_exposed_provenance_mut::<c_void>(q);
                        assert!(holds(q, s.min(256), t as u8));
                        // SAFETY: as above.
                        let r = unsafe { realloc(q, s * 2) };
                        assert!(!r.is_null() && holds(r, s.min(256), t as u8));
                        // SAFETY: as above.
                        unsafe { free(r) };
                    }
                }
                for (q, _) in held {
                    // SAFETY: as above.
                    unsafe { free(core::ptr::with_exposed_provenance_mut(q)) };
                }
            })
        })
        .collect();
    let (mut hung, mut failed) = (0, 0);
    for round in 0..40usize {
        std::thread::sleep(std::time::Duration::from_millis(2));
        // SAFETY: the child calls only the malloc family, the heap's checker and `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = std::panic::catch_unwind(|| {
                let mut blocks = Vec::new();
                for k in 0..200usize {
                    let size = 1 + (k * 7919 + round) % 40_000;
                    // SAFETY: plain C calls on blocks of ours.
                    let p = unsafe { malloc(size) };
                    assert!(!p.is_null());
                    fill(p, size, k as u8);
                    blocks.push((p, size, k as u8));
                }
                for (p, size, seed) in blocks {
                    assert!(holds(p, size, seed));
                    // SAFETY: as above.
                    unsafe { free(p) };
                }
                check();
            })
            .is_ok();
            // SAFETY: ends the child at once, running nothing of the parent's.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        match wait_child(pid) {
            Some(0) => {}
            Some(_) => failed += 1,
            None => hung += 1,
        }
        // One broken child is enough (and a hung one took the whole deadline).
        if hung + failed > 0 {
            break;
        }
    }
    STOP.store(true, Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!((hung, failed), (0, 0), "children that hung, children whose heap was broken");
    check();
}

/// The heap's view of the block at `p`.
fn heap_block(p: usize) -> Result<memkit_heap::BlockInfo, memkit_heap::XmfreeError> {
    HEAP.block(NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(p)).expect("non-null"))
}

#[test]
fn a_thread_caches_its_frees_and_gives_them_back_when_it_ends() {
    let _s = serial();
    let (p, held_while_cached) = std::thread::spawn(|| {
        // SAFETY: plain C calls on the thread's own blocks.
        let p = unsafe { malloc(100) };
        // SAFETY: as above.
        unsafe { free(p) };
        // Cached: still allocated in its span, and the next request of its class takes it.
        let held = heap_block(p.expose_provenance()).is_ok();
        // SAFETY: as above.
        let q = unsafe { malloc(99) };
        assert_eq!(q, p);
        // SAFETY: as above.
        unsafe { free(q) };
        (p.expose_provenance(), held)
    })
    .join()
    .unwrap();
    assert!(held_while_cached);
    // The thread's end flushed its cache: the block is free in the heap.
    assert!(matches!(heap_block(p), Err(memkit_heap::XmfreeError::NotAllocated(_))), "{:?}", heap_block(p));
    check();
}

#[test]
fn a_second_free_of_a_cached_block_is_ignored() {
    let _s = serial();
    std::thread::spawn(|| {
        // The second free is a program's bug that must change nothing.
        // SAFETY: plain C calls.
        let p = unsafe { malloc(200) };
        // SAFETY: as above.
        unsafe { free(p) };
        // SAFETY: as above.
        unsafe { free(p) };
        // SAFETY: as above.
        let a = unsafe { malloc(200) };
        // SAFETY: as above.
        let b = unsafe { malloc(200) };
        assert_ne!(a, b, "a block freed twice was handed out twice");
        // SAFETY: as above.
        unsafe { free(a) };
        // SAFETY: as above.
        unsafe { free(b) };
    })
    .join()
    .unwrap();
    check();
}
