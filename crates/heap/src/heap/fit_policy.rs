//! The fit policy: by size class, packing (exact fit in arenas, arena fragments for small requests)
//! or adaptive, which packs while the page source's headroom is short.

use core::sync::atomic::Ordering::*;
use spin::RelaxStrategy;

use memkit_types::PAGE_SIZE;

use super::stats::PathCounters;
use super::{CpuId, EXACT_FIT_ABOVE, Heap, ROOMY_SPAN_MAX};
use crate::class::MAX_SMALL;
use crate::source::PageSource;

/// Where a heap places requests up to the largest size class (32 KiB); larger ones always
/// take whole pages. Chosen when the heap is made ([`Heap::with_fit_policy`]).
///
/// Usable share of a 16 MiB heap at its first failure in the benchmark's random fill (12
/// seeds, mean and lowest): size classes 91.4 % / 90.5 %, exact fit 97.3 % / 96.6 %,
/// adaptive 95.7 % / 95.0 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FitPolicy {
    /// A block of the request's size class (8 classes per doubling) from a span: the
    /// fastest placement; rounding up to the class (about 6.5 % of the heap) and partly
    /// used spans are what it gives up.
    SizeClasses,
    /// Packs, always: a request above 256 B takes a block of its size rounded up to 64
    /// bytes from an arena (a two-level segregated fit with immediate merging of free
    /// neighbours, see `arena`); a smaller one an arena fragment that holds it, else a
    /// class block. The most usable placement, at about half the speed of size classes.
    ExactFit,
    /// While the page source has room, size classes up to 1 KiB and exact fit in arenas
    /// above (spans of larger classes, each partly used, hold much more than their live
    /// blocks on real programs' allocation patterns);
    /// [`ExactFit`](FitPolicy::ExactFit) once it runs short: when the source's free memory
    /// falls below [`PACK_HEADROOM`] times the bytes the heap has in use
    /// ([`Heap::bytes_in_use`]), rounding to classes would cost a share of what is left,
    /// so the heap packs; it places by class again when the headroom comes back. The heap
    /// looks each time it takes or gives back a run of pages. Blocks keep the placement
    /// they were made with (a free finds either kind); packing, it still fills the holes
    /// of existing spans before it makes arena blocks of their class.
    ///
    /// Blocks placed by class before the switch keep their rounding, which is why this
    /// keeps less of a full heap usable than [`ExactFit`](FitPolicy::ExactFit).
    #[default]
    Adaptive,
}

/// [`FitPolicy::Adaptive`] packs (places by exact fit) while the page source has less
/// free memory than this many times the bytes the heap has in use.
pub const PACK_HEADROOM: usize = 4;

impl FitPolicy {
    /// The largest class size a span serves at first: requests of larger classes go to
    /// arenas.
    #[inline]
    pub(super) const fn span_max(self) -> usize {
        match self {
            FitPolicy::SizeClasses => MAX_SMALL,
            FitPolicy::Adaptive => ROOMY_SPAN_MAX,
            FitPolicy::ExactFit => EXACT_FIT_ABOVE,
        }
    }
}

impl<P: PageSource, C: CpuId, R: RelaxStrategy> Heap<P, C, R> {
    /// Bytes of live blocks (their usable sizes), as last counted by each shard.
    #[inline]
    pub fn bytes_in_use(&self) -> usize {
        self.shards.iter().map(|s| s.in_use.load(Relaxed)).sum::<usize>()
    }

    /// [`FitPolicy::Adaptive`]: packs (arenas for requests above 256 B) while the page
    /// source has less than [`PACK_HEADROOM`] times the bytes in use free, else places
    /// by size class. Called whenever the heap takes or gives back a run.
    #[inline]
    pub(super) fn adapt(&self) {
        if self.fit_policy == FitPolicy::Adaptive {
            let free = self.source.free_page_count().get().saturating_mul(PAGE_SIZE);
            let short = free < PACK_HEADROOM.saturating_mul(self.bytes_in_use());
            let was = self.span_max.swap(if short { EXACT_FIT_ABOVE } else { ROOMY_SPAN_MAX }, Relaxed);
            if short && was == ROOMY_SPAN_MAX {
                PathCounters::bump(&self.counters.packings);
            } else if !short && was == EXACT_FIT_ABOVE {
                PathCounters::bump(&self.counters.unpackings);
            }
        }
    }
}
