//! The frame allocator suite: memkit's pmallocator against `buddy_system_allocator`'s
//! `FrameAllocator`, `bitmap-allocator` and `frame-alloc`'s `SummaryBuddyAllocator`, over the
//! same 1 GiB of frames, interleaved.
//!
//! Cases:
//! - `order0 alloc+free`: a ring of 1024 live frames; each operation allocates one frame
//!   and frees the oldest.
//! - `churn 0/9/12+fixed`: a seeded mix of order-0 (70 %), order-9 (18 %), order-12 (4 %)
//!   allocations, fixed-address order-0 requests (8 %; `frame-alloc` has none and skips
//!   them), and frees of random live blocks; the largest free order left afterwards is
//!   printed under the table.
//! - `init 1 GiB`: building an allocator over 1 GiB with two holes.
//! - `metadata bytes/GiB`: bytes of metadata per GiB managed (the `ns/op` column holds
//!   bytes; speedup = peer bytes / memkit bytes).
//!
//! # Unsafe
//!
//! The peer `frame-alloc` takes its RAM as raw addresses (its `Provenance` trait): a heap
//! block that this module allocates, exposes once and owns for the allocator's whole life,
//! reached only through the allocator; a block is freed once, with the order it was taken
//! with.

use std::alloc::Layout;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use bitmap_allocator::BitAlloc;
use frame_alloc::{PageSize, PhysicalAllocator, Provenance, RegionInit, SummaryBuddyAllocator};
use memkit_phys::{Allocator, MemoryArea, get_header, header_words};
use memkit_types::{Frame, FrameCount, Order, PhysAddr};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::{MEMKIT, Options, Report, interleaved};

/// Frames managed: 1 GiB.
const FRAMES: usize = 1 << 18;
/// `frame-alloc` orders 0..=18.
const FA_ORDERS: usize = 19;
const BSA: &str = "buddy_system_allocator";
const BITMAP: &str = "bitmap-allocator";
const FRAME_ALLOC: &str = "frame-alloc";

/// The common face of the four allocators. A block is named the way each allocator names it
/// (a frame number, or memkit's typed `Frame`).
trait Frames {
    type Block: Copy;
    fn alloc(&mut self, order: u32) -> Option<Self::Block>;
    /// Allocates the frame with this number, giving its block.
    fn alloc_at(&mut self, frame: usize) -> Option<Self::Block>;
    fn free(&mut self, block: Self::Block, order: u32);
    fn has_alloc_at(&self) -> bool {
        true
    }
}

/// memkit: the header lives in a buffer standing for the RAM it describes.
struct Memkit {
    header: Vec<u64>,
}

impl Memkit {
    fn new() -> Self {
        let area = MemoryArea::new(PhysAddr::zero(), (FRAMES as u64) << 12);
        let mut header = vec![0u64; header_words(area).expect("1 GiB is a valid area")];
        let region = get_header(area, core::iter::empty()).expect("room for the header");
        Allocator::init(area, region, &mut header, core::iter::empty()).expect("init");
        Memkit { header }
    }

    fn view(&mut self) -> Allocator<'_> {
        Allocator::attach(&mut self.header).expect("a valid header")
    }
}

/// Holds the view attached for the whole measurement, as a kernel would.
struct MemkitView<'h>(Allocator<'h>);

impl Frames for MemkitView<'_> {
    type Block = Frame;
    fn alloc(&mut self, order: u32) -> Option<Frame> {
        let order = if order == 0 { Order::ZERO } else { Order::new(order as u8) };
        self.0.allocate(order).ok()
    }
    fn alloc_at(&mut self, frame: usize) -> Option<Frame> {
        let f = Frame::from_number(frame as u64);
        self.0.allocate_at(f, FrameCount::new(1)).ok().map(|()| f)
    }
    fn free(&mut self, frame: Frame, order: u32) {
        // `free_run` is the seed's `free` without the block-shape check (a block is a run).
        self.0.free_run(frame, FrameCount::new(1 << order)).expect("free of a live block");
    }
}

struct Bsa(buddy_system_allocator::FrameAllocator<33>);

impl Bsa {
    fn new() -> Self {
        let mut a = buddy_system_allocator::FrameAllocator::<33>::new();
        a.add_frame(0, FRAMES);
        Bsa(a)
    }
}

impl Frames for Bsa {
    type Block = usize;
    fn alloc(&mut self, order: u32) -> Option<usize> {
        self.0.alloc(1 << order)
    }
    fn alloc_at(&mut self, frame: usize) -> Option<usize> {
        self.0.alloc_at(frame, 1)
    }
    fn free(&mut self, frame: usize, order: u32) {
        self.0.dealloc(frame, 1 << order);
    }
}

/// `BitAlloc1M` covers 2^20 frames (4 GiB); only the first 1 GiB is inserted.
struct Bitmap(Box<bitmap_allocator::BitAlloc1M>);

impl Bitmap {
    fn new() -> Self {
        let mut a = Box::<bitmap_allocator::BitAlloc1M>::default();
        a.insert(0..FRAMES);
        Bitmap(a)
    }
}

impl Frames for Bitmap {
    type Block = usize;
    fn alloc(&mut self, order: u32) -> Option<usize> {
        if order == 0 { self.0.alloc() } else { self.0.alloc_contiguous(None, 1 << order, order as usize) }
    }
    fn alloc_at(&mut self, frame: usize) -> Option<usize> {
        self.0.alloc_contiguous(Some(frame), 1, 0)
    }
    fn free(&mut self, frame: usize, order: u32) {
        if order == 0 {
            self.0.dealloc(frame);
        } else {
            self.0.dealloc_contiguous(frame, 1 << order);
        }
    }
}

/// `frame-alloc` keeps its bitmap inside the managed memory, reached through a
/// [`Provenance`]: here the "physical" memory is a heap block and physical addresses are its
/// exposed addresses.
struct HeapProvenance;

// SAFETY: `create` is only called by the allocator for addresses inside the `Region` the
// `FrameAlloc` owns (exposed in `Region::new`), which outlives the allocator.
unsafe impl Provenance for HeapProvenance {
    unsafe fn create(phys: usize) -> NonNull<u8> {
        let p: *mut u8 = std::ptr::with_exposed_provenance_mut(phys);
        NonNull::new(p).expect("a non-null physical address")
    }
    unsafe fn destroy<T>(ptr: NonNull<T>) -> usize {
        ptr.addr().get()
    }
}

/// A heap block standing for 1 GiB of RAM (pages are only touched where the bitmap lives).
struct Region {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Region {
    fn new() -> Self {
        let layout = Layout::from_size_align(FRAMES << 12, 1 << 30).expect("a valid layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        let ptr = NonNull::new(p).expect("1 GiB of address space");
        Region { ptr, layout }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `Region::new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

struct FrameAlloc {
    a: Box<SummaryBuddyAllocator<FA_ORDERS, HeapProvenance>>,
    base: usize,
    _region: Region,
}

const PS_4K: PageSize = PageSize::from_log2(12);

impl FrameAlloc {
    fn new() -> Self {
        let region = Region::new();
        let base = region.ptr.as_ptr().expose_provenance();
        let a = Box::new(SummaryBuddyAllocator::<FA_ORDERS, HeapProvenance>::new(PS_4K));
        // SAFETY: the region is exclusively owned by this struct, outlives the allocator and is
        // reached only through `HeapProvenance`; initialised once, single-threaded.
        unsafe { a.init_region(base, FRAMES << 12) };
        FrameAlloc { a, base, _region: region }
    }
}

impl Frames for FrameAlloc {
    type Block = usize;
    fn alloc(&mut self, order: u32) -> Option<usize> {
        let ps = PageSize::from_log2(12 + order as u8);
        self.a.allocate_physical(ps, NonZeroUsize::MIN).ok().map(|p| (p - self.base) >> 12)
    }
    fn alloc_at(&mut self, _frame: usize) -> Option<usize> {
        None
    }
    fn free(&mut self, frame: usize, order: u32) {
        let ps = PageSize::from_log2(12 + order as u8);
        // SAFETY: `frame` was returned by `alloc` with this order and is freed once.
        unsafe { self.a.deallocate_physical(ps, NonZeroUsize::MIN, self.base + (frame << 12)) };
    }
    fn has_alloc_at(&self) -> bool {
        false
    }
}

/// A ring of live order-0 frames: each step allocates one and frees the oldest.
struct Ring<A: Frames> {
    a: A,
    live: Vec<A::Block>,
}

impl<A: Frames> Ring<A> {
    fn new(mut a: A) -> Self {
        let live = (0..1024).map(|_| a.alloc(0).expect("a fresh allocator has frames")).collect();
        Ring { a, live }
    }
    fn step(&mut self, i: u64) {
        let slot = (i % 1024) as usize;
        let f = self.a.alloc(0).expect("frames");
        self.a.free(self.live[slot], 0);
        self.live[slot] = f;
    }
}

/// Seeded churn over orders 0, 9 and 12 with fixed-address requests.
struct Churn<A: Frames> {
    a: A,
    rng: SmallRng,
    live: Vec<(A::Block, u32)>,
}

impl<A: Frames> Churn<A> {
    fn new(a: A) -> Self {
        Churn { a, rng: SmallRng::seed_from_u64(0x6d656d6b6974), live: Vec::new() }
    }
    fn step(&mut self, _i: u64) {
        let roll = self.rng.random_range(0..100u32);
        // Keep about half the memory live: free more when above, allocate more when below.
        let pressure = self.live.len() > 3000;
        if roll < 45 || (pressure && roll < 60) {
            if !self.live.is_empty() {
                let k = self.rng.random_range(0..self.live.len());
                let (f, o) = self.live.swap_remove(k);
                self.a.free(f, o);
            }
            return;
        }
        let order = match roll % 25 {
            0..=16 => 0,
            17..=21 => 9,
            22 => 12,
            _ => {
                let f = self.rng.random_range(0..FRAMES);
                if self.a.has_alloc_at()
                    && let Some(b) = self.a.alloc_at(f)
                {
                    self.live.push((b, 0));
                }
                return;
            }
        };
        if let Some(f) = self.a.alloc(order) {
            self.live.push((f, order));
        }
    }
    /// The largest order that can still be allocated (probed, then given back).
    fn largest_free_order(&mut self) -> Option<u32> {
        (0..=18).rev().find(|&k| match self.a.alloc(k) {
            Some(f) => {
                self.a.free(f, k);
                true
            }
            None => false,
        })
    }
}

/// Runs the suite.
pub fn run(options: &Options) -> Report {
    let mut report = Report::new("frames");
    let (rounds, iters, churn_iters, init_iters) =
        if options.quick { (9, 100_000, 90_000, 5) } else { (15, 1_000_000, 1_500_000, 20) };

    // order-0 pairs
    options.progress("order0 alloc+free", 0, 4);
    let mut mk = Memkit::new();
    let mut m = Ring::new(MemkitView(mk.view()));
    let mut b = Ring::new(Bsa::new());
    let mut bm = Ring::new(Bitmap::new());
    let mut fa = Ring::new(FrameAlloc::new());
    let rows = interleaved(
        rounds,
        iters,
        &mut [
            (MEMKIT, &mut |i| m.step(i)),
            (BSA, &mut |i| b.step(i)),
            (BITMAP, &mut |i| bm.step(i)),
            (FRAME_ALLOC, &mut |i| fa.step(i)),
        ],
    );
    for (name, ns) in rows {
        report.push("order0 alloc+free", &name, ns);
    }
    drop((m, b, bm, fa));

    // churn: one long run per allocator (the sequence depends on the state), measured once.
    options.progress("churn 0/9/12+fixed", 1, 4);
    let mut mk = Memkit::new();
    let mut m = Churn::new(MemkitView(mk.view()));
    let mut b = Churn::new(Bsa::new());
    let mut bm = Churn::new(Bitmap::new());
    let mut fa = Churn::new(FrameAlloc::new());
    let rows = interleaved(
        rounds,
        churn_iters / u64::from(rounds),
        &mut [
            (MEMKIT, &mut |i| m.step(i)),
            (BSA, &mut |i| b.step(i)),
            (BITMAP, &mut |i| bm.step(i)),
            (FRAME_ALLOC, &mut |i| fa.step(i)),
        ],
    );
    for (name, ns) in rows {
        report.push("churn 0/9/12+fixed", &name, ns);
    }
    let largest = [
        (MEMKIT, m.largest_free_order(), m.live.len()),
        (BSA, b.largest_free_order(), b.live.len()),
        (BITMAP, bm.largest_free_order(), bm.live.len()),
        (FRAME_ALLOC, fa.largest_free_order(), fa.live.len()),
    ];
    for (name, order, live) in largest {
        report.note(format!(
            "churn: {name}: largest free order after churn {} ({live} live blocks)",
            order.map_or_else(|| "-".to_string(), |o| o.to_string())
        ));
    }
    drop((m, b, bm, fa));

    // init over 1 GiB with two holes
    options.progress("init 1 GiB", 2, 4);
    let holes =
        [MemoryArea::new(PhysAddr::new(0x9f000), 0x61000), MemoryArea::new(PhysAddr::new(0x2000_0000), 0x10_0000)];
    let area = MemoryArea::new(PhysAddr::zero(), (FRAMES as u64) << 12);
    let mut header = vec![0u64; header_words(area).expect("valid area")];
    let region = get_header(area, holes.iter().copied()).expect("room");
    let rows = interleaved(
        rounds,
        init_iters,
        &mut [
            (MEMKIT, &mut |_| {
                let a = Allocator::init(area, region, &mut header, holes.iter().copied()).expect("init");
                std::hint::black_box(a.free_frames());
            }),
            (BSA, &mut |_| {
                let mut a = buddy_system_allocator::FrameAllocator::<33>::new();
                a.add_frame(0, 0x9f);
                a.add_frame(0x100, 0x20000);
                a.add_frame(0x20100, FRAMES);
                std::hint::black_box(a.alloc(1));
            }),
            (BITMAP, &mut |_| {
                let mut a = Box::<bitmap_allocator::BitAlloc1M>::default();
                a.insert(0..0x9f);
                a.insert(0x100..0x20000);
                a.insert(0x20100..FRAMES);
                std::hint::black_box(a.alloc());
            }),
            (FRAME_ALLOC, &mut |_| {
                let a = FrameAlloc::new();
                std::hint::black_box(a.base);
            }),
        ],
    );
    for (name, ns) in rows {
        report.push("init 1 GiB", &name, ns);
    }

    // metadata per GiB
    options.progress("metadata bytes/GiB", 3, 4);
    let memkit_bytes = memkit_phys::header_size(area).expect("valid area") as f64;
    report.push("metadata bytes/GiB", MEMKIT, memkit_bytes);
    let bitmap_bytes = std::mem::size_of::<bitmap_allocator::BitAlloc1M>() as f64 / 4.0;
    report.push("metadata bytes/GiB", BITMAP, bitmap_bytes);
    let fa = FrameAlloc::new();
    report.push("metadata bytes/GiB", FRAME_ALLOC, (fa.a.reserved_frames() << 12) as f64);
    report.note(format!(
        "metadata: memkit {:.4} % of RAM; {BSA} keeps BTreeSet nodes on the heap (grows with fragmentation)",
        memkit_bytes * 100.0 / f64::from(1u32 << 30)
    ));
    report.note("targets: order0 speedup >= 3 vs buddy_system_allocator and > 1 vs each peer");
    options.progress("done", 4, 4);
    report
}
