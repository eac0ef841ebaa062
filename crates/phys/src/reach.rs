//! Counters of the structural paths of the frame allocator, its pools and its per-CPU caches,
//! so that tests can show which paths a random workload reaches (the fast single-word
//! paths, word runs, climbs through the levels, summary updates, searches, exhaustion,
//! cache refills and drains).
//!
//! The counters exist in tests and with the `check` feature; otherwise counting is an empty
//! inline function and costs nothing. They are process-wide relaxed atomics: a test that
//! reads them should run alone in its test binary and compare a [`Snapshot`] taken before
//! with one taken after ([`Snapshot::since`]).

macro_rules! paths {
    ($($name:ident: $doc:literal,)*) => {
        /// A structural path of the frame allocator, its pools or its caches.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Path {
            $(#[doc = $doc] $name,)*
        }

        impl Path {
            /// Every path, in declaration order.
            pub const ALL: &'static [Path] = &[$(Path::$name),*];

            /// The path's name.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(Path::$name => stringify!($name),)*
                }
            }

            /// What the path is.
            #[must_use]
            pub const fn doc(self) -> &'static str {
                match self {
                    $(Path::$name => $doc,)*
                }
            }
        }
    };
}

paths! {
    TakeOneFast: "order 0 taken from the hint word alone (the inlined fast path)",
    TakeOneHint: "order 0 taken from the hint word on the slow path (the word was full or the fast path not tried)",
    TakeOneSearch: "order 0 found through the summaries (the hint word was empty)",
    TakeOneLimit: "order 0 below a limit the hint word lies above: the lowest free frame decides",
    StaleSummaryCleaned: "a search cleared a stale layer-0 summary bit over an emptied frame word",
    TakeAtOneWord: "a single frame at a fixed address taken in its word alone",
    FreeOneFast: "one frame freed in its word alone (the inlined fast path)",
    FreeOneSlow: "one frame freed on the general path (its word was empty or filled up)",
    WordFilled: "a frame word filled up: its unit at level 1 is set (merge)",
    WordEmptiedFull: "a full frame word lost a frame: its unit at level 1 is cleared (split)",
    MergeUpper: "a merge climbed to level 2 or above (set_unit)",
    SplitUpper: "a split climbed to level 2 or above (clear_unit)",
    BlockTaken: "a block of order >= 6 taken (whole frame words emptied)",
    BlockTakenUpper: "a block of order >= 12 taken (whole words of level 1 or above emptied)",
    BlockFreed: "a block of order >= 6 freed (whole frame words filled)",
    BlockFreedUpper: "a block of order >= 12 freed (whole words of level 1 or above filled)",
    RangeTakenWords: "a run of whole frame words taken",
    RangeTakenBits: "a run taken with masks over several words (clear_units across words)",
    RangeFreedBits: "a run freed with masks over several words (set_units across words)",
    RangeFreedWords: "a run of whole frame words freed",
    UnitsSetUpper: "a run free set units of level 1 or above (set_units)",
    UnitsClearedUpper: "a run take cleared units of level 1 or above (clear_units)",
    SummaryUpperSet: "a summary word went from zero to non-zero: the layer above changed",
    SummaryUpperCleared: "a summary word emptied: the layer above changed",
    SummaryRangeSet: "summary bits set over a range spanning several summary words",
    SummaryRangeCleared: "summary bits cleared over a range spanning several summary words",
    SearchUpperLayer: "a block search moved to another summary word through a summary layer above",
    HintSkip: "a block search started past the first word (order hint)",
    NoFitRecorded: "a failed search recorded that no block of an order >= 6 is free",
    NoFitSkip: "a request of order >= 6 answered from the recorded no-fit order",
    RunFallback: "a run found by scanning the free runs after no aligned block held it",
    Exhausted: "an allocation refused: no free block or run fits",
    PoolExhausted: "a pool refused an allocation for lack of frames",
    CacheRefill: "a CPU's empty cache slot refilled a batch from the allocator",
    CacheRefillShort: "a refill got fewer frames than a batch (the allocator ran dry)",
    CacheShortDrain: "the allocator ran short: every cache slot was drained before a retry",
    CacheEmpty: "a refill got no frame even after the drain: the cache reported exhaustion",
    CacheDrainBatch: "a CPU's full cache slot gave a batch back to the allocator",
    CacheDrainAll: "every cached frame given back (FrameCache::drain)",
}

/// Number of paths.
pub const PATHS: usize = Path::ALL.len();

#[cfg(any(test, feature = "check"))]
static COUNTS: [core::sync::atomic::AtomicUsize; PATHS] = [const { core::sync::atomic::AtomicUsize::new(0) }; PATHS];

/// Counts one pass through `path`.
#[cfg(any(test, feature = "check"))]
#[inline]
pub(crate) fn hit(path: Path) {
    COUNTS[path as usize].fetch_add(1, core::sync::atomic::Ordering::Relaxed);
}

/// Counts nothing: the counters exist only in tests and with the `check` feature.
#[cfg(not(any(test, feature = "check")))]
#[inline(always)]
pub(crate) fn hit(_path: Path) {}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    counts: [u64; PATHS],
}

impl Snapshot {
    /// The counters now (all zero without the `check` feature outside tests).
    #[must_use]
    pub fn now() -> Snapshot {
        #[cfg(any(test, feature = "check"))]
        let counts = core::array::from_fn(|i| COUNTS[i].load(core::sync::atomic::Ordering::Relaxed) as u64);
        #[cfg(not(any(test, feature = "check")))]
        let counts = [0; PATHS];
        Snapshot { counts }
    }

    /// The passes counted between `before` and `self`.
    #[must_use]
    pub fn since(&self, before: &Snapshot) -> Snapshot {
        Snapshot { counts: core::array::from_fn(|i| self.counts[i].wrapping_sub(before.counts[i])) }
    }

    /// Passes through `path`.
    #[must_use]
    pub fn get(&self, path: Path) -> u64 {
        self.counts[path as usize]
    }

    /// The paths with no pass.
    pub fn missed(&self) -> impl Iterator<Item = Path> + '_ {
        Path::ALL.iter().copied().filter(|&p| self.get(p) == 0)
    }
}

impl core::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for &p in Path::ALL {
            writeln!(f, "{:>12}  {:<20} {}", self.get(p), p.name(), p.doc())?;
        }
        Ok(())
    }
}
