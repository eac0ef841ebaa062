//! A TLB flush token absorbing others ([`TlbFlush::absorb`]) against a set of pages: the
//! steps and the check shared by `memkit-region`'s random test and the `tlb_flush` fuzz
//! target.
//!
//! Not full, a token must name exactly the pages absorbed; full, its hull must cover them;
//! it must be full exactly when some step's pages needed more ranges than it keeps or
//! reached [`FULL_FLUSH_PAGES`]. Pages near the top of the lower half and counts running
//! past it attack the ends of the address space.

use std::collections::BTreeSet;

use memkit_region::TlbFlush;
use memkit_region::mmu::FULL_FLUSH_PAGES;
use memkit_types::{PAGE_SIZE, Page, PageCount, VirtAddr};

/// The last page of the lower half of the address space.
const TOP: usize = (1 << 35) - 1;

/// One step: `pages` pages from `first` on, as a token of their own or added directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, arbitrary::Arbitrary)]
pub struct Absorb {
    /// The first page: from 0 on, or (with the top bit) down from the top of the lower half.
    pub first: u16,
    /// How many pages (0: nothing).
    pub pages: u8,
    /// Through [`TlbFlush::absorb`] of a token (else [`TlbFlush::add_pages`]).
    pub as_token: bool,
}

impl Absorb {
    fn first_page(self) -> usize {
        if self.first & 0x8000 == 0 { usize::from(self.first) } else { TOP - usize::from(self.first & 0x7fff) }
    }
}

/// Applies `steps` to a token and to a set of pages, checking the token after each.
///
/// # Panics
/// On the first difference from the set or broken invariant.
pub fn check_absorbing(steps: &[Absorb]) {
    let mut t = TlbFlush::none();
    let mut model = BTreeSet::new();
    let mut full = false;
    for &step in steps {
        let first = step.first_page();
        let n = usize::from(step.pages);
        let page = Page::containing_address(VirtAddr::new(first * PAGE_SIZE));
        if step.as_token {
            t.absorb(TlbFlush::new(page, PageCount::new(n)));
        } else {
            t.add_pages(page, PageCount::new(n));
        }
        model.extend(first..first + n);
        let runs = model.iter().filter(|&&p| p == 0 || !model.contains(&(p - 1))).count();
        full |= runs > TlbFlush::RANGES || model.len() >= FULL_FLUSH_PAGES;
        t.check_invariants();
        assert_eq!(t.is_full(), full, "{step:?}");
        assert_eq!(t.is_empty(), model.is_empty(), "{step:?}");
        let (lo, hi) = (t.start().number(), t.start().number() + t.count().get());
        if full {
            assert_eq!((Some(lo), Some(hi - 1)), (model.first().copied(), model.last().copied()), "the hull");
        } else {
            let named: BTreeSet<usize> = t.ranges().flat_map(|(p, c)| p.number()..p.number() + c.get()).collect();
            assert_eq!(named, model, "{step:?}");
            assert_eq!(t.pages(), model.len());
        }
    }
    t.ignore();
}
