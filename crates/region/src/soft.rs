//! A software MMU: a page table in plain Rust memory, with simulated loads and stores.
//!
//! ```text
//!   SoftMmu (open addressing, linear probing)      PhysMemory (SparseRam, memfd, ...)
//!   slot: page ─▶ (frame, rights, cache)  ──load/store──▶  frame bytes
//! ```
//!
//! Tests drive the region map with it: a load or store checks each page's translation and
//! rights like the hardware does and reports the first faulting page as an [`AccessFault`];
//! [`AddressSpace`](crate::AddressSpace) resolves the fault and retries. Lookups and
//! mappings into a table with room allocate nothing; the table doubles when it is half full
//! (or reserve room up front with [`SoftMmu::with_capacity`]).

use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;

use memkit_types::{Access, CacheMode, Frame, PAGE_SIZE, Page, PageCount, PhysAddr, PhysMemory, Rights, VirtAddr};

use crate::mmu::{MapError, Mmu, TlbFlush, Translation};

const EMPTY: usize = usize::MAX;

#[derive(Debug, Clone, Copy)]
struct Slot {
    page: usize,
    translation: Translation,
}

const VACANT: Slot = Slot {
    page: EMPTY,
    translation: Translation { frame: Frame::from_number(0), rights: Rights::empty(), cache: CacheMode::WriteBack },
};

/// A load or store that hit a page without a translation or without the rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessFault {
    /// The first faulting address.
    pub addr: VirtAddr,
    /// The access.
    pub access: Access,
}

impl fmt::Display for AccessFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} fault at {}", self.access, self.addr)
    }
}

impl core::error::Error for AccessFault {}

/// A page table in Rust memory (an open-addressing hash of page number → translation).
///
/// # Invariants
/// The slot count is a power of two, at least twice the number of translations; every
/// translation sits in the probe sequence of its page with no vacant slot before it.
#[derive(Debug, Clone)]
pub struct SoftMmu {
    slots: Vec<Slot>,
    len: usize,
    flushes: Cell<u64>,
}

impl Default for SoftMmu {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftMmu {
    /// An empty page table.
    #[must_use]
    pub fn new() -> Self {
        Self::with_capacity(8)
    }

    /// An empty page table with room for `pages` translations before it grows.
    #[must_use]
    pub fn with_capacity(pages: usize) -> Self {
        let n = pages.saturating_mul(2).max(16).next_power_of_two();
        SoftMmu { slots: vec![VACANT; n], len: 0, flushes: Cell::new(0) }
    }

    /// The number of mapped pages.
    #[must_use]
    pub fn mapped_pages(&self) -> usize {
        self.len
    }

    /// The number of flush calls so far.
    #[must_use]
    pub fn flush_count(&self) -> u64 {
        self.flushes.get()
    }

    /// Every translation, ordered by page.
    #[must_use]
    pub fn translations(&self) -> Vec<(Page, Translation)> {
        let mut v: Vec<(Page, Translation)> = self
            .slots
            .iter()
            .filter(|s| s.page != EMPTY)
            .map(|s| (Page::containing_address(VirtAddr::new(s.page * PAGE_SIZE)), s.translation))
            .collect();
        v.sort_unstable_by_key(|(p, _)| *p);
        v
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, page: usize) -> usize {
        // Runs of 16 neighbouring pages share neighbouring slots (locality for sequential
        // access); the runs are spread by Fibonacci hashing (the top bits of the product).
        let bits = self.slots.len().trailing_zeros() - 4;
        let run = ((page >> 4) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_shr(64 - bits) as usize;
        ((run << 4) | (page & 15)) & self.mask()
    }

    fn position(&self, page: usize) -> Option<usize> {
        let mut i = self.home(page);
        loop {
            let s = self.slots[i].page;
            if s == page {
                return Some(i);
            }
            if s == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask();
        }
    }

    fn put(&mut self, page: usize, translation: Translation) {
        if (self.len + 1) * 2 > self.slots.len() {
            let doubled = vec![VACANT; self.slots.len() * 2];
            let old = core::mem::replace(&mut self.slots, doubled);
            self.len = 0;
            for s in old.into_iter().filter(|s| s.page != EMPTY) {
                self.put(s.page, s.translation);
            }
        }
        let mut i = self.home(page);
        while self.slots[i].page != EMPTY {
            i = (i + 1) & self.mask();
        }
        self.slots[i] = Slot { page, translation };
        self.len += 1;
    }

    /// Removes slot `i` and shifts later members of the cluster back (no tombstones).
    fn take(&mut self, mut i: usize) {
        self.len -= 1;
        loop {
            self.slots[i] = VACANT;
            let mut j = i;
            loop {
                j = (j + 1) & self.mask();
                let s = self.slots[j];
                if s.page == EMPTY {
                    return;
                }
                let h = self.home(s.page);
                // s stays when its home lies cyclically in (hole, j]; else it fills the hole.
                let stays = if i <= j { h > i && h <= j } else { h > i || h <= j };
                if !stays {
                    self.slots[i] = s;
                    i = j;
                    break;
                }
            }
        }
    }

    /// Checks each page of `[addr, addr + len)` for a translation allowing `access`, and
    /// returns the translated pieces' physical addresses through `each` (page by page).
    fn walk(
        &self,
        addr: VirtAddr,
        len: usize,
        access: Access,
        mut each: impl FnMut(PhysAddr, usize, usize),
    ) -> Result<(), AccessFault> {
        let end = addr.as_usize().checked_add(len).ok_or(AccessFault { addr, access })?;
        // First every page, so a faulting access touches nothing.
        let mut a = addr.as_usize();
        while a < end {
            let pg = Page::containing_address(VirtAddr::try_new(a).map_err(|_| AccessFault { addr, access })?);
            match self.translate(pg) {
                Some(t) if t.rights.allows(access) => {}
                _ => return Err(AccessFault { addr: VirtAddr::new(a), access }),
            }
            a = (a & !(PAGE_SIZE - 1)) + PAGE_SIZE;
        }
        let mut a = addr.as_usize();
        let mut done = 0;
        while a < end {
            let within = a % PAGE_SIZE;
            let n = (PAGE_SIZE - within).min(end - a);
            let t = self.translate(Page::containing_address(VirtAddr::new(a))).expect("checked above");
            each(PhysAddr::new(t.frame.start_address().as_u64() + within as u64), done, n);
            done += n;
            a += n;
        }
        Ok(())
    }

    /// Loads `buf.len()` bytes from `addr` through the page table.
    ///
    /// # Errors
    /// [`AccessFault`] at the first page without a readable translation; nothing is read.
    pub fn load(&self, mem: &(impl PhysMemory + ?Sized), addr: VirtAddr, buf: &mut [u8]) -> Result<(), AccessFault> {
        self.walk(addr, buf.len(), Access::Read, |pa, at, n| mem.read(pa, &mut buf[at..at + n]))
    }

    /// Stores `buf` at `addr` through the page table.
    ///
    /// # Errors
    /// [`AccessFault`] at the first page without a writable translation; nothing is written.
    pub fn store(&self, mem: &(impl PhysMemory + ?Sized), addr: VirtAddr, buf: &[u8]) -> Result<(), AccessFault> {
        self.walk(addr, buf.len(), Access::Write, |pa, at, n| mem.write(pa, &buf[at..at + n]))
    }

    /// Checks the table's invariants.
    ///
    /// # Panics
    /// On the first broken invariant.
    #[cfg(any(test, feature = "check"))]
    pub fn check_invariants(&self) {
        assert!(self.slots.len().is_power_of_two() && self.len * 2 <= self.slots.len(), "table too full");
        let used = self.slots.iter().filter(|s| s.page != EMPTY).count();
        assert_eq!(used, self.len, "length wrong");
        for s in self.slots.iter().filter(|s| s.page != EMPTY) {
            assert!(self.position(s.page).is_some(), "translation unreachable from its home slot");
        }
    }
}

impl Mmu for SoftMmu {
    fn map(
        &mut self,
        page: Page,
        frame: Frame,
        count: PageCount,
        rights: Rights,
        cache: CacheMode,
    ) -> Result<TlbFlush, MapError> {
        let first = page.number();
        let last_page = page.checked_add(count).ok_or(MapError::OutOfRange(page))?;
        frame.checked_add(memkit_types::FrameCount::new(count.get() as u64)).ok_or(MapError::InvalidFrame(frame))?;
        for n in first..last_page.number() {
            if self.position(n).is_some() {
                return Err(MapError::AlreadyMapped(Page::containing_address(VirtAddr::new(n * PAGE_SIZE))));
            }
        }
        for (i, n) in (first..last_page.number()).enumerate() {
            let f = Frame::from_number(frame.number() + i as u64);
            self.put(n, Translation { frame: f, rights, cache });
        }
        Ok(TlbFlush::new(page, count))
    }

    fn unmap(&mut self, page: Page, count: PageCount) -> Result<TlbFlush, MapError> {
        let last = page.checked_add(count).ok_or(MapError::OutOfRange(page))?;
        if count.get() > self.len {
            // A wide range: walk the table instead of the range.
            let victims: Vec<usize> = self
                .slots
                .iter()
                .map(|s| s.page)
                .filter(|&p| p != EMPTY && p >= page.number() && p < last.number())
                .collect();
            for p in victims {
                if let Some(i) = self.position(p) {
                    self.take(i);
                }
            }
        } else {
            for n in page.number()..last.number() {
                if let Some(i) = self.position(n) {
                    self.take(i);
                }
            }
        }
        Ok(TlbFlush::new(page, count))
    }

    fn protect(&mut self, page: Page, count: PageCount, rights: Rights) -> Result<TlbFlush, MapError> {
        let last = page.checked_add(count).ok_or(MapError::OutOfRange(page))?;
        if count.get() > self.len {
            for s in
                self.slots.iter_mut().filter(|s| s.page != EMPTY && s.page >= page.number() && s.page < last.number())
            {
                s.translation.rights = rights;
            }
        } else {
            for n in page.number()..last.number() {
                if let Some(i) = self.position(n) {
                    self.slots[i].translation.rights = rights;
                }
            }
        }
        Ok(TlbFlush::new(page, count))
    }

    fn translate(&self, page: Page) -> Option<Translation> {
        self.position(page.number()).map(|i| self.slots[i].translation)
    }

    fn flush(&self, _start: Page, _count: PageCount) {
        self.flushes.set(self.flushes.get() + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memkit_types::testing::SparseRam;
    use std::collections::BTreeMap;

    fn pg(n: usize) -> Page {
        Page::containing_address(VirtAddr::new(n * PAGE_SIZE))
    }

    #[test]
    fn table_matches_a_btreemap() {
        let mut mmu = SoftMmu::new();
        let mut model = BTreeMap::new();
        let mut x: u64 = 12345;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (x % 300) as usize;
            let count = ((x >> 20) % 4) as usize + 1;
            match (x >> 40) % 3 {
                0 => {
                    let r = mmu.map(
                        pg(n),
                        Frame::from_number(n as u64),
                        PageCount::new(count),
                        Rights::RW,
                        CacheMode::WriteBack,
                    );
                    let free = (n..n + count).all(|p| !model.contains_key(&p));
                    assert_eq!(r.is_ok(), free);
                    if let Ok(f) = r {
                        f.ignore();
                        for p in n..n + count {
                            model.insert(p, p as u64);
                        }
                    }
                }
                1 => {
                    mmu.unmap(pg(n), PageCount::new(count)).unwrap().ignore();
                    for p in n..n + count {
                        model.remove(&p);
                    }
                }
                _ => {
                    mmu.protect(pg(n), PageCount::new(count), Rights::READ).unwrap().ignore();
                }
            }
            assert_eq!(mmu.mapped_pages(), model.len());
        }
        mmu.check_invariants();
        let got: Vec<usize> = mmu.translations().iter().map(|(p, _)| p.number()).collect();
        let want: Vec<usize> = model.keys().copied().collect();
        assert_eq!(got, want);
    }

    #[test]
    fn loads_and_stores_check_rights() {
        let ram = SparseRam::new();
        let mut mmu = SoftMmu::new();
        mmu.map(pg(1), Frame::from_number(7), PageCount::new(2), Rights::RW, CacheMode::WriteBack).unwrap().ignore();
        mmu.map(pg(3), Frame::from_number(9), PageCount::new(1), Rights::READ, CacheMode::WriteBack).unwrap().ignore();
        let at = VirtAddr::new(2 * PAGE_SIZE - 2);
        mmu.store(&ram, at, &[1, 2, 3, 4]).unwrap();
        assert_eq!(ram.read_byte(PhysAddr::new(8 * PAGE_SIZE as u64 - 1)), 2);
        assert_eq!(ram.read_byte(PhysAddr::new(8 * PAGE_SIZE as u64)), 3);
        let mut b = [0; 4];
        mmu.load(&ram, at, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        let fault = mmu.store(&ram, VirtAddr::new(3 * PAGE_SIZE - 1), &[5, 5]).unwrap_err();
        assert_eq!(fault, AccessFault { addr: VirtAddr::new(3 * PAGE_SIZE), access: Access::Write });
        assert_eq!(ram.read_byte(PhysAddr::new(9 * PAGE_SIZE as u64 - 1)), 0, "a faulting store writes nothing");
        assert!(mmu.load(&ram, VirtAddr::new(4 * PAGE_SIZE), &mut b).is_err());
    }
}
