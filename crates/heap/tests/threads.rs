//! Heaps shared between threads: a producer allocates and a consumer frees, and several
//! threads allocate and free at once on their own shards; each with both placements.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use memkit_heap::{CpuId, Heap, Placement, RegionPageSource};

#[derive(Debug, Clone, Copy)]
struct ThreadNumber;

static NEXT: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static NUMBER: Cell<usize> = const { Cell::new(usize::MAX) };
}

impl CpuId for ThreadNumber {
    fn current(&self) -> usize {
        NUMBER.with(|n| {
            if n.get() == usize::MAX {
                n.set(NEXT.fetch_add(1, Ordering::Relaxed));
            }
            n.get()
        })
    }
}

const PLACEMENTS: [Placement; 3] = [Placement::SizeClasses, Placement::ExactFit, Placement::Adaptive];

fn heap(bytes: usize, placement: Placement) -> &'static Heap<RegionPageSource, ThreadNumber> {
    let mem: &'static mut [u8] = vec![0u8; bytes].leak();
    // SAFETY: leaked memory, used only by this source, valid for 'static.
    let src = unsafe { RegionPageSource::new(NonNull::new(mem.as_mut_ptr()).unwrap(), mem.len()) }.unwrap();
    let h = Box::leak(Box::new(Heap::with_placement(src, ThreadNumber, false, placement)));
    h.init().unwrap();
    h
}

fn size_of_block(i: usize) -> usize {
    [8, 24, 100, 700, 3000, 20_000, 50_000][i % 7] + i % 13
}

#[test]
fn one_thread_allocates_another_frees() {
    for placement in PLACEMENTS {
        one_thread_allocates_another_frees_with(placement);
    }
}

fn one_thread_allocates_another_frees_with(placement: Placement) {
    let h = heap(64 << 20, placement);
    let (tx, rx) = mpsc::sync_channel::<(usize, usize, u8)>(256);
    let producer = std::thread::spawn(move || {
        for i in 0..100_000usize {
            let size = size_of_block(i);
            let p = loop {
                if let Ok(p) = h.allocate(size, (i % 7) as u32) {
                    break p;
                }
                std::thread::yield_now();
            };
            // SAFETY: a fresh block of `size` bytes, handed over whole to the consumer.
            unsafe { std::ptr::write_bytes(p.as_ptr(), i as u8, size) };
            tx.send((p.as_ptr() as usize, size, i as u8)).unwrap();
        }
    });
    let consumer = std::thread::spawn(move || {
        let mut n = 0;
        for (addr, size, fill) in rx {
            // SAFETY: the producer wrote the block and never touches it again.
            let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, size) };
            assert!(bytes.iter().all(|&b| b == fill), "block {addr:#x} changed");
            h.free(NonNull::new(addr as *mut u8).unwrap()).unwrap();
            n += 1;
        }
        n
    });
    producer.join().unwrap();
    assert_eq!(consumer.join().unwrap(), 100_000);
    h.check_invariants();
    h.trim();
    let s = h.stats();
    assert_eq!((s.small_blocks, s.large_blocks, s.pages), (0, 0, 0), "{s:?}");
}

#[test]
fn threads_allocate_and_free_at_once() {
    for placement in PLACEMENTS {
        threads_allocate_and_free_at_once_with(placement);
    }
}

fn threads_allocate_and_free_at_once_with(placement: Placement) {
    let h = heap(64 << 20, placement);
    std::thread::scope(|s| {
        for t in 0..4usize {
            s.spawn(move || {
                let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
                let mut x = t as u64 * 7919 + 1;
                for i in 0..50_000usize {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if live.len() < 200 && (!x.is_multiple_of(3) || live.is_empty()) {
                        let size = size_of_block(x as usize % 1000);
                        if let Ok(p) = h.allocate(size, (x % 9) as u32) {
                            assert_eq!(p.as_ptr() as usize % (1 << (x % 9)), 0);
                            // SAFETY: a fresh block of `size` bytes.
                            unsafe { std::ptr::write_bytes(p.as_ptr(), i as u8, size) };
                            live.push((p, size, i as u8));
                        }
                    } else {
                        let (p, size, fill) = live.swap_remove(x as usize % live.len());
                        // SAFETY: our live block.
                        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), size) };
                        assert!(bytes.iter().all(|&b| b == fill));
                        h.free(p).unwrap();
                    }
                }
                for (p, _, _) in live {
                    h.free(p).unwrap();
                }
            });
        }
        // Invariants hold while the others work.
        for _ in 0..20 {
            h.check_invariants();
            std::thread::yield_now();
        }
    });
    h.check_invariants();
    h.trim();
    assert_eq!(h.stats().pages, 0);
}
