//! The `Mmu` trait: how a region map installs translations, whatever the hardware.
//!
//! The region map decides *what* is mapped; an [`Mmu`] does the mapping: a software page
//! table in tests, `mmap` over a memfd when hosted on Linux, x86_64 page tables in the
//! kernel. Every change returns a [`TlbFlush`] token that must be flushed or explicitly
//! ignored (`#[must_use]`), so a stale translation cannot be forgotten.

use core::fmt;

use memkit_types::{CacheMode, Frame, PAGE_SHIFT, Page, PageCount, Rights, SUPERPAGE_SIZE, VirtAddr};

/// The pages of one large (2 MiB) entry: 512.
pub const LARGE_PAGES: usize = SUPERPAGE_SIZE / memkit_types::PAGE_SIZE;

/// The size of the entry that translates a page ([`Mmu::translate_entry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntrySize {
    /// One 4 KiB page.
    Small,
    /// A 2 MiB block of [`LARGE_PAGES`] pages, 2 MiB aligned in both address spaces
    /// ([`Mmu::map_large`]).
    Large,
}

impl EntrySize {
    /// The pages the entry translates: 1 or [`LARGE_PAGES`].
    #[must_use]
    pub const fn pages(self) -> usize {
        match self {
            EntrySize::Small => 1,
            EntrySize::Large => LARGE_PAGES,
        }
    }
}

/// A translation as the MMU holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The frame the page maps to.
    pub frame: Frame,
    /// What the mapping allows.
    pub rights: Rights,
    /// How the mapping is cached.
    pub cache: CacheMode,
}

/// Why a mapping could not be installed or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MapError {
    /// The page already has a translation.
    AlreadyMapped(Page),
    /// The page has no translation (for [`Mmu::protect`]).
    NotMapped(Page),
    /// The page is outside what this MMU can translate (outside the hosted window, say).
    OutOfRange(Page),
    /// The frame is not RAM this MMU can map.
    InvalidFrame(Frame),
    /// Memory for page tables (or a kernel mapping slot) is exhausted.
    OutOfMemory,
    /// This MMU maps no large (2 MiB) entries, or not this page or frame (not 2 MiB
    /// aligned): [`Mmu::map_large`].
    Unsupported(Page),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::AlreadyMapped(p) => write!(f, "page {:#x} is already mapped", p.start_address().as_usize()),
            MapError::NotMapped(p) => write!(f, "page {:#x} is not mapped", p.start_address().as_usize()),
            MapError::OutOfRange(p) => write!(f, "page {:#x} is outside the MMU's range", p.start_address().as_usize()),
            MapError::InvalidFrame(fr) => write!(f, "frame {:#x} cannot be mapped", fr.start_address().as_u64()),
            MapError::OutOfMemory => f.write_str("no memory for page tables"),
            MapError::Unsupported(p) => {
                write!(f, "no 2 MiB entry can map page {:#x}", p.start_address().as_usize())
            }
        }
    }
}

impl core::error::Error for MapError {}

/// From this many pages on, a batch flushes the whole TLB (of the MMU's address space)
/// rather than page by page (Linux's `tlb_single_page_flush_ceiling` is 33).
pub const FULL_FLUSH_PAGES: usize = 33;

/// A pending TLB invalidation: the pages some changes of one MMU's translations left stale.
///
/// It must be [`flush`](TlbFlush::flush)ed through the MMU that produced it, or
/// [`ignore`](TlbFlush::ignore)d where the caller knows no stale entry can exist (a page
/// that was not mapped before, on an MMU without a TLB).
///
/// A token can [`absorb`](TlbFlush::absorb) others of the same MMU, so that several changes
/// in one operation are flushed together, in one round of IPIs on a multiprocessor (Linux's
/// `mmu_gather`). It holds a list of up to [`TlbFlush::RANGES`] ranges of pages, merged
/// where they overlap or touch; once the list overflows or names
/// [`FULL_FLUSH_PAGES`] pages or more, the token is *full*: the MMU flushes everything it
/// may cache for the address space. Absorbing allocates nothing.
///
/// # Invariants
/// Not full: the ranges are sorted, non-empty, neither overlapping nor touching, at most
/// [`TlbFlush::RANGES`] of them, naming fewer than [`FULL_FLUSH_PAGES`] pages in all, and
/// exactly the pages absorbed. Always: the hull covers every page absorbed.
#[must_use = "a changed translation must be flushed from the TLB or explicitly ignored"]
#[derive(Debug)]
pub struct TlbFlush {
    /// `(first page number, pages)`, the first `len` in use.
    ranges: [(usize, usize); TlbFlush::RANGES],
    len: usize,
    /// Too many pages or ranges: flush the whole TLB.
    full: bool,
    /// The first page number absorbed and one past the last (`lo == hi`: nothing).
    lo: usize,
    hi: usize,
    /// Every page absorbed was translated by a large entry ([`TlbFlush::large`]).
    large: bool,
}

impl TlbFlush {
    /// The ranges a token keeps before it becomes full.
    pub const RANGES: usize = 8;

    /// A flush of `count` pages from `start` on (full when `count` is
    /// [`FULL_FLUSH_PAGES`] or more).
    pub const fn new(start: Page, count: PageCount) -> Self {
        let mut t = TlbFlush::none();
        let n = count.get();
        if n > 0 {
            t.lo = start.number();
            t.hi = start.number().saturating_add(n);
            t.ranges[0] = (t.lo, t.hi - t.lo);
            t.len = 1;
            t.full = n >= FULL_FLUSH_PAGES;
        }
        t
    }

    /// A flush of the large (2 MiB) entries that translated the `count` pages from `start`
    /// on (both multiples of [`LARGE_PAGES`]): one invalidation per entry is enough
    /// ([`Mmu::flush_large`]).
    pub const fn large(start: Page, count: PageCount) -> Self {
        let mut t = TlbFlush::new(start, count);
        t.large = !t.is_empty();
        t
    }

    /// Whether every page absorbed was translated by a large entry ([`TlbFlush::large`]):
    /// then one invalidation per 2 MiB of the hull flushes them all.
    #[must_use]
    pub const fn is_large(&self) -> bool {
        self.large
    }

    /// A token that owes nothing: what a batch starts from.
    pub const fn none() -> Self {
        TlbFlush { ranges: [(0, 0); TlbFlush::RANGES], len: 0, full: false, lo: 0, hi: 0, large: false }
    }

    /// The first page to flush (of the hull of everything absorbed).
    #[must_use]
    pub const fn start(&self) -> Page {
        Page::containing_address(VirtAddr::new(self.lo << PAGE_SHIFT))
    }

    /// The number of pages of the hull of everything absorbed: from [`start`](Self::start)
    /// to one past the last page (0: nothing is owed).
    #[must_use]
    pub const fn count(&self) -> PageCount {
        PageCount::new(self.hi - self.lo)
    }

    /// Whether nothing is owed.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.lo == self.hi
    }

    /// Whether the whole TLB of the address space is to be flushed.
    #[must_use]
    pub const fn is_full(&self) -> bool {
        self.full
    }

    /// The pages to flush one by one when the token is not full (with at most
    /// [`FULL_FLUSH_PAGES`]` - 1` of them), else the hull of everything absorbed.
    pub fn ranges(&self) -> impl Iterator<Item = (Page, PageCount)> + '_ {
        let list: &[(usize, usize)] = if self.full || self.is_empty() { &[] } else { &self.ranges[..self.len] };
        let hull = (self.full && !self.is_empty()).then_some((self.lo, self.hi - self.lo));
        list.iter()
            .copied()
            .chain(hull)
            .map(|(first, n)| (Page::containing_address(VirtAddr::new(first << PAGE_SHIFT)), PageCount::new(n)))
    }

    /// The number of pages the token names one by one (not full), or of its hull (full).
    #[must_use]
    pub fn pages(&self) -> usize {
        if self.full { self.hi - self.lo } else { self.ranges[..self.len].iter().map(|r| r.1).sum() }
    }

    /// Takes `other`'s pages in (a flush of the same MMU): flushing `self` then flushes
    /// both.
    pub fn absorb(&mut self, other: TlbFlush) {
        if other.is_empty() {
            return;
        }
        self.large = other.large && (self.large || self.is_empty());
        if other.full {
            self.extend_hull(other.lo, other.hi);
            self.full = true;
            return;
        }
        for &(first, n) in &other.ranges[..other.len] {
            self.add(first, n);
        }
    }

    /// Takes `count` pages from `start` in.
    pub fn add_pages(&mut self, start: Page, count: PageCount) {
        if count.get() > 0 {
            self.large = false;
        }
        self.add(start.number(), count.get());
    }

    fn extend_hull(&mut self, lo: usize, hi: usize) {
        if self.is_empty() {
            (self.lo, self.hi) = (lo, hi);
        } else {
            (self.lo, self.hi) = (self.lo.min(lo), self.hi.max(hi));
        }
    }

    fn add(&mut self, first: usize, n: usize) {
        if n == 0 {
            return;
        }
        let end = first.saturating_add(n);
        self.extend_hull(first, end);
        if self.full {
            return;
        }
        // The ranges are sorted and apart: merge the new one with every range it overlaps
        // or touches, and insert the result in its place.
        let (mut lo, mut hi) = (first, end);
        let mut kept = [(0usize, 0usize); TlbFlush::RANGES + 1];
        let mut k = 0;
        let mut placed = false;
        for &(s, c) in &self.ranges[..self.len] {
            let e = s + c;
            if e < lo {
                kept[k] = (s, c);
                k += 1;
            } else if s > hi {
                if !placed {
                    kept[k] = (lo, hi - lo);
                    k += 1;
                    placed = true;
                }
                kept[k] = (s, c);
                k += 1;
            } else {
                (lo, hi) = (lo.min(s), hi.max(e));
            }
        }
        if !placed {
            kept[k] = (lo, hi - lo);
            k += 1;
        }
        let pages: usize = kept[..k].iter().map(|r| r.1).sum();
        if k > TlbFlush::RANGES || pages >= FULL_FLUSH_PAGES {
            self.full = true;
            self.len = 0;
            return;
        }
        self.ranges[..k].copy_from_slice(&kept[..k]);
        self.len = k;
    }

    /// Flushes the pages from `mmu`'s TLB, all at once ([`Mmu::flush_batch`]); a token that
    /// owes nothing calls nothing.
    pub fn flush<M: Mmu + ?Sized>(self, mmu: &M) {
        if self.is_empty() {
            return;
        }
        if self.large {
            mmu.flush_large(self.start(), self.count());
        } else {
            mmu.flush_batch(&self);
        }
    }

    /// Drops the obligation: the caller knows no stale translation can exist.
    pub fn ignore(self) {}

    /// Checks the invariants (see the type's documentation).
    ///
    /// # Panics
    /// On the first broken invariant.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        assert!(self.lo <= self.hi, "hull reversed");
        assert!(!self.large || !self.is_empty(), "a large token owes nothing");
        if self.full {
            assert!(!self.is_empty(), "a full token owes nothing");
            return;
        }
        assert!(self.len <= TlbFlush::RANGES, "too many ranges");
        assert_eq!(self.len == 0, self.is_empty(), "ranges without a hull, or a hull without ranges");
        let list = &self.ranges[..self.len];
        for (i, &(s, c)) in list.iter().enumerate() {
            assert!(c > 0, "an empty range");
            assert!(s >= self.lo && s + c <= self.hi, "a range outside the hull");
            if let Some(&(next, _)) = list.get(i + 1) {
                assert!(s + c < next, "ranges out of order, overlapping or touching");
            }
        }
        if let (Some(first), Some(last)) = (list.first(), list.last()) {
            assert_eq!((first.0, last.0 + last.1), (self.lo, self.hi), "the hull is not the ranges' hull");
        }
        assert!(self.pages() < FULL_FLUSH_PAGES, "a token with this many pages is full");
    }
}

/// An MMU: installs, changes and removes page translations of one address space.
pub trait Mmu {
    /// Maps the `count` pages from `page` on to the `count` frames from `frame` on.
    ///
    /// # Errors
    /// [`MapError::AlreadyMapped`] naming the first page that has a translation (nothing is
    /// mapped then), [`MapError::OutOfRange`], [`MapError::InvalidFrame`],
    /// [`MapError::OutOfMemory`].
    fn map(
        &mut self,
        page: Page,
        frame: Frame,
        count: PageCount,
        rights: Rights,
        cache: CacheMode,
    ) -> Result<TlbFlush, MapError>;

    /// Removes the translations of the `count` pages from `page` on; pages without one are
    /// passed over.
    ///
    /// # Errors
    /// [`MapError::OutOfRange`] when the range is outside what this MMU translates.
    fn unmap(&mut self, page: Page, count: PageCount) -> Result<TlbFlush, MapError>;

    /// Changes the rights of the mapped pages among the `count` pages from `page` on
    /// (unmapped ones are passed over), for example to write-protect a copy-on-write page.
    ///
    /// # Errors
    /// [`MapError::OutOfRange`] when the range is outside what this MMU translates.
    fn protect(&mut self, page: Page, count: PageCount, rights: Rights) -> Result<TlbFlush, MapError>;

    /// Takes every right outside `keep` away from the mapped pages among the `count` pages
    /// from `page` on: each keeps its own rights `& keep` (a copy-on-write page mapped
    /// without `WRITE` gains nothing), and one left with no right is unmapped. Pages that
    /// already fit are left alone. The default visits every page through
    /// [`translate`](Self::translate) and changes runs of pages with one
    /// [`protect`](Self::protect) or [`unmap`](Self::unmap) each.
    ///
    /// # Errors
    /// [`MapError::OutOfRange`] when the range is outside what this MMU translates (the
    /// pages before the failure may have lost their rights: a page with fewer rights only
    /// faults again).
    fn restrict(&mut self, page: Page, count: PageCount, keep: Rights) -> Result<TlbFlush, MapError> {
        // A run of consecutive pages that all become `rights`: (first page, pages, rights).
        let mut run: Option<(Page, usize, Rights)> = None;
        let apply = |mmu: &mut Self, run: (Page, usize, Rights)| -> Result<(), MapError> {
            let (first, n, rights) = run;
            let flush = if rights.is_empty() {
                mmu.unmap(first, PageCount::new(n))?
            } else {
                mmu.protect(first, PageCount::new(n), rights)?
            };
            // The caller flushes the whole range once.
            flush.ignore();
            Ok(())
        };
        for i in 0..count.get() {
            let p = page.checked_add(PageCount::new(i)).ok_or(MapError::OutOfRange(page))?;
            let want = self.translate(p).and_then(|t| {
                let r = t.rights & keep;
                (r != t.rights).then_some(r)
            });
            match (run, want) {
                (Some((first, n, r)), Some(w)) if w == r && first.checked_add(PageCount::new(n)) == Some(p) => {
                    run = Some((first, n + 1, r));
                }
                (_, w) => {
                    if let Some(done) = run.take() {
                        apply(self, done)?;
                    }
                    run = w.map(|w| (p, 1, w));
                }
            }
        }
        if let Some(done) = run {
            apply(self, done)?;
        }
        Ok(TlbFlush::new(page, count))
    }

    /// The translation of `page`, if it has one (for a page inside a large entry: the
    /// page's own frame within the entry's run).
    fn translate(&self, page: Page) -> Option<Translation>;

    /// The translation of `page` and the size of the entry that holds it. The default
    /// knows small entries only.
    fn translate_entry(&self, page: Page) -> Option<(Translation, EntrySize)> {
        self.translate(page).map(|t| (t, EntrySize::Small))
    }

    /// Whether [`map_large`](Self::map_large) may succeed (`false` by default): the region
    /// map asks its backing for a 2 MiB run only then.
    fn maps_large(&self) -> bool {
        false
    }

    /// Maps the [`LARGE_PAGES`] pages from `page` on (2 MiB aligned) to the frames from
    /// `frame` on (2 MiB aligned) with one large entry. Every other change of the pages
    /// works on a large entry as on small ones: an [`unmap`](Self::unmap) or a
    /// [`protect`](Self::protect) of part of it splits it first (the other pages keep
    /// their translations, or, where the MMU finds no memory for the split, lose them and
    /// fault again), and a [`map`](Self::map) of one of its pages is
    /// [`MapError::AlreadyMapped`].
    ///
    /// # Errors
    /// [`MapError::Unsupported`] by default, and for a page or frame that is not 2 MiB
    /// aligned; [`MapError::AlreadyMapped`] naming a page of the block that has a
    /// translation (nothing is mapped then), [`MapError::OutOfRange`],
    /// [`MapError::InvalidFrame`], [`MapError::OutOfMemory`].
    fn map_large(&mut self, page: Page, frame: Frame, rights: Rights, cache: CacheMode) -> Result<TlbFlush, MapError> {
        let _ = (frame, rights, cache);
        Err(MapError::Unsupported(page))
    }

    /// Invalidates any cached translation of the `count` pages from `start` on.
    fn flush(&self, start: Page, count: PageCount);

    /// Invalidates the large entries that translated the `count` pages from `start` on
    /// ([`TlbFlush::large`]): one invalidation per 2 MiB is enough. The default flushes
    /// every page ([`flush`](Self::flush)).
    fn flush_large(&self, start: Page, count: PageCount) {
        self.flush(start, count);
    }

    /// Invalidates every translation `batch` names, all at once: on a multiprocessor, one
    /// round of IPIs for the whole batch (a full batch empties the address space's TLB
    /// entries). By default one [`flush`](Self::flush) per range of the batch (the hull, for
    /// a full one); an MMU whose flush costs a round trip to other CPUs overrides it.
    fn flush_batch(&self, batch: &TlbFlush) {
        for (start, count) in batch.ranges() {
            self.flush(start, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;

    fn pg(n: usize) -> Page {
        Page::containing_address(VirtAddr::new(n << PAGE_SHIFT))
    }

    fn covered(t: &TlbFlush) -> BTreeSet<usize> {
        t.ranges().flat_map(|(p, c)| p.number()..p.number() + c.get()).collect()
    }

    /// The runs of consecutive pages in `set`.
    fn runs(set: &BTreeSet<usize>) -> usize {
        set.iter().filter(|&&p| p == 0 || !set.contains(&(p - 1))).count()
    }

    #[test]
    fn nothing_owed_flushes_nothing() {
        let t = TlbFlush::none();
        t.check_invariants();
        assert!(t.is_empty() && !t.is_full());
        assert_eq!((t.pages(), t.count().get(), t.ranges().count()), (0, 0, 0));
        let z = TlbFlush::new(pg(5), PageCount::new(0));
        z.check_invariants();
        assert!(z.is_empty());
        let mut a = TlbFlush::none();
        a.absorb(z);
        a.add_pages(pg(9), PageCount::new(0));
        a.check_invariants();
        assert!(a.is_empty());
        let soft = crate::SoftMmu::new();
        a.flush(&soft);
        assert_eq!(soft.flush_count(), 0, "an empty token calls no flush");
    }

    #[test]
    fn neighbours_merge_and_distant_pages_stay_apart() {
        let mut t = TlbFlush::new(pg(10), PageCount::new(2));
        t.absorb(TlbFlush::new(pg(12), PageCount::new(1)));
        t.check_invariants();
        assert_eq!(t.ranges().collect::<Vec<_>>(), [(pg(10), PageCount::new(3))]);
        t.absorb(TlbFlush::new(pg(20), PageCount::new(1)));
        t.absorb(TlbFlush::new(pg(5), PageCount::new(1)));
        t.check_invariants();
        assert_eq!(covered(&t), [5, 10, 11, 12, 20].into_iter().collect());
        // A range bridging two merges them and the page between.
        t.absorb(TlbFlush::new(pg(6), PageCount::new(4)));
        t.check_invariants();
        assert_eq!(t.ranges().count(), 2);
        assert_eq!((t.start(), t.count().get(), t.pages()), (pg(5), 16, 9));
    }

    #[test]
    fn too_many_pages_or_ranges_make_a_full_flush() {
        let mut t = TlbFlush::new(pg(0), PageCount::new(FULL_FLUSH_PAGES - 1));
        assert!(!t.is_full());
        t.absorb(TlbFlush::new(pg(FULL_FLUSH_PAGES - 1), PageCount::new(1)));
        t.check_invariants();
        assert!(t.is_full(), "{FULL_FLUSH_PAGES} pages");
        assert!(TlbFlush::new(pg(3), PageCount::new(FULL_FLUSH_PAGES)).is_full());

        let mut t = TlbFlush::none();
        for i in 0..TlbFlush::RANGES {
            t.add_pages(pg(i * 2), PageCount::new(1));
        }
        assert!(!t.is_full());
        t.add_pages(pg(1000), PageCount::new(1));
        t.check_invariants();
        assert!(t.is_full(), "one range more than the list holds");
        assert_eq!(t.ranges().collect::<Vec<_>>(), [(pg(0), PageCount::new(1001))], "the hull");
        // A full token stays full and its hull grows.
        t.absorb(TlbFlush::new(pg(2000), PageCount::new(1)));
        assert_eq!((t.start(), t.count().get()), (pg(0), 2001));
        let soft = crate::SoftMmu::new();
        t.flush(&soft);
        assert_eq!((soft.flush_count(), soft.full_flush_count()), (1, 1));
    }

    #[test]
    fn the_top_of_the_address_space_does_not_overflow() {
        let top = Page::containing_address(VirtAddr::new(usize::MAX & !(PAGE_SIZE_USIZE - 1)));
        let mut t = TlbFlush::new(top, PageCount::new(usize::MAX));
        t.check_invariants();
        assert!(t.is_full());
        t.absorb(TlbFlush::new(pg(0), PageCount::new(1)));
        t.check_invariants();
        assert_eq!(t.start(), pg(0));
        let mut u = TlbFlush::new(top, PageCount::new(1));
        u.absorb(TlbFlush::new(pg(0), PageCount::new(1)));
        u.check_invariants();
        assert_eq!(covered(&u).len(), 2);
    }

    #[test]
    fn a_batch_stays_large_only_while_every_token_is() {
        let mut t = TlbFlush::none();
        t.absorb(TlbFlush::large(pg(0), PageCount::new(LARGE_PAGES)));
        t.absorb(TlbFlush::large(pg(4 * LARGE_PAGES), PageCount::new(LARGE_PAGES)));
        t.check_invariants();
        assert!(t.is_large());
        let soft = crate::SoftMmu::new();
        t.flush(&soft);
        assert_eq!((soft.flush_count(), soft.large_flush_count()), (1, 1));
        let mut t = TlbFlush::large(pg(0), PageCount::new(LARGE_PAGES));
        t.absorb(TlbFlush::new(pg(LARGE_PAGES), PageCount::new(1)));
        t.check_invariants();
        assert!(!t.is_large(), "a small page among them");
        let mut u = TlbFlush::large(pg(0), PageCount::new(LARGE_PAGES));
        u.add_pages(pg(3 * LARGE_PAGES), PageCount::new(2));
        assert!(!u.is_large());
        let mut v = TlbFlush::new(pg(7), PageCount::new(1));
        v.absorb(TlbFlush::large(pg(LARGE_PAGES), PageCount::new(LARGE_PAGES)));
        assert!(!v.is_large());
        assert!(!TlbFlush::large(pg(0), PageCount::new(0)).is_large());
        for x in [t, u, v] {
            x.flush(&soft);
        }
        assert_eq!((soft.flush_count(), soft.large_flush_count(), soft.full_flush_count()), (4, 1, 3));
    }

    const PAGE_SIZE_USIZE: usize = 1 << PAGE_SHIFT;

    proptest::proptest! {
        /// Against a set of pages: not full, a token names exactly the pages absorbed; full,
        /// its hull covers them; it is full exactly when some step's pages needed more
        /// ranges than it keeps, or reached the threshold.
        #[test]
        fn absorbing_matches_a_set_of_pages(steps in proptest::collection::vec((0usize..120, 0usize..12, proptest::bool::ANY), 0..40)) {
            let mut t = TlbFlush::none();
            let mut model = BTreeSet::new();
            let mut full = false;
            for (first, n, as_token) in steps {
                if as_token {
                    t.absorb(TlbFlush::new(pg(first), PageCount::new(n)));
                } else {
                    t.add_pages(pg(first), PageCount::new(n));
                }
                model.extend(first..first + n);
                full |= runs(&model) > TlbFlush::RANGES || model.len() >= FULL_FLUSH_PAGES;
                t.check_invariants();
                proptest::prop_assert_eq!(t.is_full(), full);
                proptest::prop_assert_eq!(t.is_empty(), model.is_empty());
                if full {
                    let (lo, hi) = (t.start().number(), t.start().number() + t.count().get());
                    proptest::prop_assert_eq!(Some(&lo), model.first());
                    proptest::prop_assert_eq!(Some(hi - 1), model.last().copied());
                } else {
                    proptest::prop_assert_eq!(&covered(&t), &model);
                    proptest::prop_assert_eq!(t.pages(), model.len());
                }
            }
            t.ignore();
        }
    }
}
