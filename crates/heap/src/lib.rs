//! Kernel heaps in the manner of AIX `xmalloc`: `kernel_heap` and `pinned_heap`, each over
//! a 4K/64K and a 16M backing heap, over pages from a page source, with `GlobalAlloc` and
//! `allocator_api2::Allocator` implementations.
//!
//! Design principles:
//! - **Out-of-band metadata.** A block carries no header and a free span block no link: a page
//!   map (4 bytes per page of the source's range) names each page's span, and the span's
//!   descriptor holds its class and a 512-bit allocation bitmap. `xmfree` recovers the
//!   size from the pointer and checks it — owned by this heap, a block start, allocated,
//!   not pinned — before it changes anything. A bad pointer or a double free is an error,
//!   never undefined behaviour. Freeing a live block is `unsafe` all the same
//!   ([`Heap::free`], [`KernelHeaps::xmfree`]): the heaps are `GlobalAlloc`s and `&Heap`
//!   an `Allocator`, so a block may belong to a `Box` the heap cannot know of. Callers
//!   that hold blocks as addresses only use [`AddressHeaps`], whose `xmfree` is safe.
//! - **Size classes in spans.** 72 classes (16 B to 32 KiB, 8 per doubling); a span is a
//!   run of pages of one class; larger requests take whole pages. Empty spans go back to
//!   the page source (one per class and shard, and up to 256 pages of spans more, are
//!   kept to avoid bouncing, and given back when the source runs dry). When the source is dry, a request takes a free
//!   block of a larger class, just the pages it needs, or neighbouring free blocks of one
//!   span taken together (a merged block, recorded out of band in a small merge table so
//!   that `xmfree` still recovers its size and refuses a pointer to its inner blocks).
//!   An aligned request that its own class cannot serve at an aligned offset tries the
//!   power-of-two classes below the class its alignment rounds it up to.
//! - **A fit policy, chosen per heap.** A [`FitPolicy`] given when a heap is made
//!   ([`Heap::with_fit_policy`], [`KernelHeaps::with_fit_policy`]) decides how requests up to
//!   the largest class are placed. [`FitPolicy::SizeClasses`]: a class block of a span,
//!   the fastest. [`FitPolicy::ExactFit`] packs: a request above 256 B takes a block of
//!   its size rounded to 64 bytes from an arena (a run of pages of one shard) through a
//!   two-level segregated fit with immediate merging of free neighbours, and a smaller one
//!   an arena fragment that holds it. The arena's header holds a start bit and an alloc
//!   bit per 64 bytes, so `xmfree` checks a pointer and finds the block's size and
//!   neighbours out of band. The free lists are out of band too (entries in a per-shard
//!   pool, checked against the header when used), so no block, free or live, carries any
//!   metadata. [`FitPolicy::Adaptive`] (the default) places by size class while the page
//!   source's free memory is at least [`PACK_HEADROOM`] times the heap's bytes in use,
//!   and packs below that. In the benchmark's random fill of a 16 MiB heap, the usable
//!   share at the first failure is 91.4 % by size class, 97.3 % packed and 95.7 %
//!   adaptive (means of 12 seeds). Up to four empty arenas per shard are kept (given back
//!   by [`Heap::trim`] and when the source runs dry), and one empty span per class plus
//!   at most 256 pages of spans more.
//! - **Sharded, no global lock on the fast path.** Spans belong to one of [`SHARDS`]
//!   shards chosen by a [`CpuId`] (`memkit-types`', re-exported); a thread allocates from its shard and frees into the
//!   span owner's shard.
//! - **A thread cache, for a caller with threads of its own.** A [`ThreadCache`] in front
//!   of a heap ([`Heap::allocate_cached`], [`Heap::free_cached`], [`Heap::flush`]) keeps up
//!   to [`CACHE_DEPTH`] freed blocks of each class up to [`CACHE_MAX`] bytes and hands them
//!   out again without the lock, as glibc's tcache does; a cached block stays allocated in
//!   its span, and a second free of one is refused. The malloc library keeps one per thread.
//! - **Locks that wait as the caller needs.** `Heap<P, C, R>`'s locks wait for their holder
//!   by `R` (a `spin::RelaxStrategy`; spinning by default, [`Heap::with_relax`] for another),
//!   so that a hosted heap of more threads than CPUs can give the CPU up.
//! - **Pages come from a [`PageSource`]**: the frame allocator through a direct map
//!   ([`DirectMapPageSource`]), one memory region ([`RegionPageSource`]), or 16 MiB large
//!   pages of either ([`LargePages`]).
//!
//! ```text
//!   xmalloc(size, align, HeapId) ─▶ KernelHeaps ─▶ Heap (4K/64K or 16M) ─▶ shard[cpu] ─▶ span
//!                                                        │                             │
//!                                                        └──────── PageSource ◀────────┘
//! ```
#![no_std]
#![deny(unsafe_code)]

#[cfg(test)]
extern crate alloc;
#[cfg(test)]
extern crate std;

#[allow(unsafe_code)]
mod arena;
mod class;
mod error;
#[allow(unsafe_code)]
mod global;
#[allow(unsafe_code)]
mod heap;
#[allow(unsafe_code)]
mod source;
#[allow(unsafe_code)]
mod xmalloc;

pub use error::{EINVAL, ENOMEM, PinError, ReallocError, UnpinError, XmallocError, XmfreeError};
pub use heap::{
    BlockInfo, CACHE_DEPTH, CACHE_MAX, CpuId, FitPolicy, Heap, HeapStats, MAX_ALIGN_LOG2, MAX_PINNED_BLOCKS,
    PACK_HEADROOM, SHARDS, SingleCpu, ThreadCache,
};
pub use source::{
    DirectMapPageSource, LARGE_PAGE_ORDER, LARGE_PAGE_PAGES, LargePages, MAX_LARGE_PAGES, PageSource, RegionPageSource,
};
pub use xmalloc::{AddressHeaps, HeapId, KernelHeaps};
