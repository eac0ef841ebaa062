//! memkit as this test binary's `#[global_allocator]`: collections, strings and threads
//! all allocate from the kernel heap.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use memkit_heap::{CpuId, HeapId, KernelHeaps, RegionPageSource};

const MEMORY_BYTES: usize = if cfg!(miri) { 32 << 20 } else { 256 << 20 };
static mut MEMORY: [u8; MEMORY_BYTES] = [0; MEMORY_BYTES];

#[derive(Debug, Clone, Copy)]
struct ThreadNumber;

static NEXT: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static NUMBER: Cell<usize> = const { Cell::new(usize::MAX) };
}

impl CpuId for ThreadNumber {
    fn current_cpu(&self) -> usize {
        NUMBER
            .try_with(|n| {
                if n.get() == usize::MAX {
                    n.set(NEXT.fetch_add(1, Ordering::Relaxed));
                }
                n.get()
            })
            .unwrap_or(0)
    }
}

type Heaps = KernelHeaps<'static, RegionPageSource, ThreadNumber>;

static SOURCE: spin::Once<RegionPageSource> = spin::Once::new();
static HEAPS: spin::Once<Heaps> = spin::Once::new();

fn heaps() -> &'static Heaps {
    HEAPS.call_once(|| {
        let source = SOURCE.call_once(|| {
            let start = NonNull::new((&raw mut MEMORY).cast::<u8>()).expect("static memory");
            // SAFETY: the static is used only through this source, for the whole program.
            unsafe { RegionPageSource::new(start, MEMORY_BYTES) }.expect("region")
        });
        let heaps = KernelHeaps::new(source, source, ThreadNumber);
        heaps.init(false).expect("kernel heaps");
        heaps
    })
}

struct Memkit;

// SAFETY: forwards to the kernel heap's `GlobalAlloc`.
unsafe impl GlobalAlloc for Memkit {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is forwarded.
        unsafe { heaps().alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { heaps().dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the block is the caller's and untouched during the call.
        unsafe { GlobalAlloc::realloc(heaps().regular_heap(HeapId::Kernel), ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Memkit = Memkit;

fn owned_by_memkit<T: ?Sized>(value: &T) -> bool {
    heaps().regular_heap(HeapId::Kernel).owns(NonNull::from(value).cast::<u8>())
}

#[test]
fn collections_and_strings_live_in_the_kernel_heap() {
    let v: Vec<u64> = (0..100_000).collect();
    assert!(owned_by_memkit(&v[..]));
    assert_eq!(v.iter().sum::<u64>(), 100_000 * 99_999 / 2);
    let mut s = String::new();
    for i in 0..10_000 {
        s.push_str(&i.to_string());
        s.push(',');
    }
    assert!(owned_by_memkit(s.as_str()));
    assert_eq!(s.split(',').filter(|x| !x.is_empty()).count(), 10_000);
    let mut map: HashMap<String, Vec<u32>> = HashMap::new();
    for i in 0..20_000u32 {
        map.entry(format!("key{}", i % 1000)).or_default().push(i);
    }
    assert_eq!(map.len(), 1000);
    assert!(map.values().all(|v| v.len() == 20));
    let tree: BTreeMap<u32, Box<[u8]>> = (0..5000u32).map(|i| (i, vec![i as u8; (i % 300) as usize].into())).collect();
    assert!(tree.iter().all(|(k, v)| v.len() == (*k % 300) as usize && v.iter().all(|&b| b == *k as u8)));
    let big = vec![7u8; 3 << 20];
    assert!(owned_by_memkit(&big[..]));
    drop((v, s, map, tree, big));
    #[cfg(feature = "check")]
    heaps().check_invariants();
}

#[test]
fn threads_share_the_kernel_heap() {
    let shared = Arc::new(Mutex::new(Vec::<String>::new()));
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let shared = Arc::clone(&shared);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    let msg = format!("thread {t} message {i}");
                    shared.lock().unwrap().push(msg.clone());
                    tx.send(msg.into_bytes()).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumer =
        std::thread::spawn(move || rx.into_iter().map(|b| String::from_utf8(b).unwrap().len()).sum::<usize>());
    for w in workers {
        w.join().unwrap();
    }
    let total = consumer.join().unwrap();
    let strings = shared.lock().unwrap();
    assert_eq!(strings.len(), 8000);
    assert_eq!(total, strings.iter().map(String::len).sum::<usize>());
    assert!(strings.iter().all(|s| owned_by_memkit(s.as_str())));
    #[cfg(feature = "check")]
    heaps().check_invariants();
}

#[test]
fn allocator_api2_collections_use_one_backing_heap() {
    let heap = heaps().regular_heap(HeapId::Pinned);
    let mut v = allocator_api2::vec::Vec::new_in(heap);
    for i in 0..10_000u32 {
        v.push(i);
    }
    assert!(heap.owns(NonNull::from(&v[0]).cast::<u8>()));
    assert_eq!(v.iter().map(|&x| u64::from(x)).sum::<u64>(), 10_000 * 9_999 / 2);
    let b = allocator_api2::boxed::Box::new_in([1u8; 100], heap);
    assert!(b.iter().all(|&x| x == 1));
}
