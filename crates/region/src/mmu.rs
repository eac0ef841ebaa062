//! The `Mmu` trait: how a region map installs translations, whatever the hardware.
//!
//! The region map decides *what* is mapped; an [`Mmu`] does the mapping: a software page
//! table in tests, `mmap` over a memfd when hosted on Linux, x86_64 page tables in the
//! kernel. Every change returns a [`TlbFlush`] token that must be flushed or explicitly
//! ignored (`#[must_use]`), so a stale translation cannot be forgotten.

use core::fmt;

use memkit_types::{CacheMode, Frame, Page, PageCount, Rights, SUPERPAGE_SIZE};

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

/// A pending TLB invalidation for `count` pages from `start` on.
///
/// It must be [`flush`](TlbFlush::flush)ed through the MMU that produced it, or
/// [`ignore`](TlbFlush::ignore)d where the caller knows no stale entry can exist (a page
/// that was not mapped before, on an MMU without a TLB).
#[must_use = "a changed translation must be flushed from the TLB or explicitly ignored"]
#[derive(Debug)]
pub struct TlbFlush {
    start: Page,
    count: PageCount,
    large: bool,
}

impl TlbFlush {
    /// A flush of `count` pages from `start` on.
    pub const fn new(start: Page, count: PageCount) -> Self {
        TlbFlush { start, count, large: false }
    }

    /// A flush of the large (2 MiB) entries that translated the `count` pages from `start`
    /// on (both multiples of [`LARGE_PAGES`]): one invalidation per entry is enough
    /// ([`Mmu::flush_large`]).
    pub const fn large(start: Page, count: PageCount) -> Self {
        TlbFlush { start, count, large: true }
    }

    /// Whether the pages were translated by large entries alone ([`TlbFlush::large`]).
    #[must_use]
    pub const fn is_large(&self) -> bool {
        self.large
    }

    /// The first page to flush.
    #[must_use]
    pub const fn start(&self) -> Page {
        self.start
    }

    /// The number of pages to flush.
    #[must_use]
    pub const fn count(&self) -> PageCount {
        self.count
    }

    /// Flushes the pages from `mmu`'s TLB.
    pub fn flush<M: Mmu + ?Sized>(self, mmu: &M) {
        if self.large {
            mmu.flush_large(self.start, self.count);
        } else {
            mmu.flush(self.start, self.count);
        }
    }

    /// Drops the obligation: the caller knows no stale translation can exist.
    pub fn ignore(self) {}
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
}
