//! A software MMU: a page table in plain Rust memory, with simulated loads and stores.
//!
//! ```text
//!   SoftMmu (open addressing, linear probing)      PhysMemory (SparseRam, memfd, ...)
//!   slot: page ─▶ (frame, rights, cache)  ──load/store──▶  frame bytes
//!   16 bytes: page number | frame number, rights and cache mode packed in one word
//! ```
//!
//! Tests drive the region map with it: a load or store checks each page's translation and
//! rights like the hardware does and reports the first faulting page as an [`AccessFault`];
//! [`AddressSpace`](crate::AddressSpace) resolves the fault and retries. Lookups and
//! mappings into a table with room allocate nothing; the table doubles when it is three
//! quarters full (or reserve room up front with [`SoftMmu::with_capacity`]). Slots are 16
//! bytes, four to a cache line, so that the table of a large address space stays small.

use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;

use memkit_types::{Access, CacheMode, Frame, PAGE_SIZE, Page, PageCount, PhysAddr, PhysMemory, Rights, VirtAddr};

use crate::mmu::{MapError, Mmu, TlbFlush, Translation};

const EMPTY: usize = usize::MAX;

/// The bits of a packed translation below the rights: the frame number.
const FRAME_BITS: u32 = 52;

#[derive(Debug, Clone, Copy)]
struct Slot {
    page: usize,
    /// The frame number, with the rights from bit 52 and the cache mode from bit 60 on.
    packed: u64,
}

const VACANT: Slot = Slot { page: EMPTY, packed: 0 };

fn pack(t: Translation) -> u64 {
    let cache: u64 = match t.cache {
        CacheMode::WriteBack => 0,
        CacheMode::WriteCombining => 1,
        CacheMode::Uncached => 2,
    };
    t.frame.number() | u64::from(t.rights.bits()) << FRAME_BITS | cache << 60
}

fn unpack(packed: u64) -> Translation {
    let cache = match packed >> 60 {
        0 => CacheMode::WriteBack,
        1 => CacheMode::WriteCombining,
        _ => CacheMode::Uncached,
    };
    Translation {
        frame: Frame::from_number(packed & ((1 << FRAME_BITS) - 1)),
        rights: Rights::from_bits_retain((packed >> FRAME_BITS) as u8),
        cache,
    }
}

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
/// The slot count is a power of two, at least 4/3 of the number of translations; every
/// translation sits in the probe sequence of its page with no vacant slot before it.
#[derive(Debug, Clone)]
pub struct SoftMmu {
    slots: Vec<Slot>,
    len: usize,
    flushes: Cell<u64>,
    /// Full flushes among them.
    full_flushes: Cell<u64>,
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
        let n = pages.saturating_mul(4).div_ceil(3).max(16).next_power_of_two();
        SoftMmu { slots: vec![VACANT; n], len: 0, flushes: Cell::new(0), full_flushes: Cell::new(0) }
    }

    /// The number of mapped pages.
    #[must_use]
    pub fn mapped_pages(&self) -> usize {
        self.len
    }

    /// The number of flushes so far: each [`Mmu::flush`] call and each batch
    /// ([`Mmu::flush_batch`]) counts once, as one round of IPIs would on a multiprocessor.
    #[must_use]
    pub fn flush_count(&self) -> u64 {
        self.flushes.get()
    }

    /// The number of flushes so far that emptied the whole TLB (a full batch).
    #[must_use]
    pub fn full_flush_count(&self) -> u64 {
        self.full_flushes.get()
    }

    /// Every translation, ordered by page.
    #[must_use]
    pub fn translations(&self) -> Vec<(Page, Translation)> {
        let mut v: Vec<(Page, Translation)> = self
            .slots
            .iter()
            .filter(|s| s.page != EMPTY)
            .map(|s| (Page::containing_address(VirtAddr::new(s.page * PAGE_SIZE)), unpack(s.packed)))
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

    /// Doubles the table until `more` translations fit without filling it beyond three
    /// quarters.
    fn make_room(&mut self, more: usize) {
        while (self.len + more) * 4 > self.slots.len() * 3 {
            let doubled = vec![VACANT; self.slots.len() * 2];
            let old = core::mem::replace(&mut self.slots, doubled);
            for s in old.into_iter().filter(|s| s.page != EMPTY) {
                let i = self.vacancy(s.page);
                self.slots[i] = s;
            }
        }
    }

    /// The first vacant slot of `page`'s probe sequence (the page is not in the table).
    fn vacancy(&self, page: usize) -> usize {
        let mut i = self.home(page);
        while self.slots[i].page != EMPTY {
            i = (i + 1) & self.mask();
        }
        i
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
        assert!(self.slots.len().is_power_of_two() && self.len * 4 <= self.slots.len() * 3, "table too full");
        let used = self.slots.iter().filter(|s| s.page != EMPTY).count();
        assert_eq!(used, self.len, "length wrong");
        for s in self.slots.iter().filter(|s| s.page != EMPTY) {
            assert!(self.position(s.page).is_some(), "translation unreachable from its home slot");
        }
    }
}

/// The number one past the last of the `count` pages from `page` on, when every one of
/// them is canonical. The end itself need not be an address: the last page of the lower
/// half (or of the upper) is a page like any other.
fn end_number(page: Page, count: PageCount) -> Result<usize, MapError> {
    match count.get().checked_sub(1) {
        None => Ok(page.number()),
        Some(rest) => {
            let last = page.checked_add(PageCount::new(rest)).ok_or(MapError::OutOfRange(page))?;
            Ok(last.number() + 1)
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
        let end = end_number(page, count)?;
        // Frame numbers fit in FRAME_BITS (a physical address has at most 52 bits).
        frame.checked_add(memkit_types::FrameCount::new(count.get() as u64)).ok_or(MapError::InvalidFrame(frame))?;
        if count.get() == 1 {
            self.make_room(1);
            // One page (a fault): one probe finds the page or the slot for it.
            let mut i = self.home(first);
            loop {
                match self.slots[i].page {
                    EMPTY => break,
                    p if p == first => return Err(MapError::AlreadyMapped(page)),
                    _ => i = (i + 1) & self.mask(),
                }
            }
            self.slots[i] = Slot { page: first, packed: pack(Translation { frame, rights, cache }) };
            self.len += 1;
            return Ok(TlbFlush::new(page, count));
        }
        for n in first..end {
            if self.position(n).is_some() {
                return Err(MapError::AlreadyMapped(Page::containing_address(VirtAddr::new(n * PAGE_SIZE))));
            }
        }
        self.make_room(count.get());
        for (k, n) in (first..end).enumerate() {
            let f = Frame::from_number(frame.number() + k as u64);
            let i = self.vacancy(n);
            self.slots[i] = Slot { page: n, packed: pack(Translation { frame: f, rights, cache }) };
            self.len += 1;
        }
        Ok(TlbFlush::new(page, count))
    }

    fn unmap(&mut self, page: Page, count: PageCount) -> Result<TlbFlush, MapError> {
        let end = end_number(page, count)?;
        if self.len == 0 {
            // Nothing is mapped: nothing to walk.
            return Ok(TlbFlush::new(page, count));
        }
        if count.get() > self.len {
            // A wide range: walk the table instead of the range.
            let victims: Vec<usize> =
                self.slots.iter().map(|s| s.page).filter(|&p| p != EMPTY && p >= page.number() && p < end).collect();
            for p in victims {
                if let Some(i) = self.position(p) {
                    self.take(i);
                }
            }
        } else {
            for n in page.number()..end {
                if let Some(i) = self.position(n) {
                    self.take(i);
                }
            }
        }
        Ok(TlbFlush::new(page, count))
    }

    fn protect(&mut self, page: Page, count: PageCount, rights: Rights) -> Result<TlbFlush, MapError> {
        let end = end_number(page, count)?;
        if count.get() > self.len {
            for s in self.slots.iter_mut().filter(|s| s.page != EMPTY && s.page >= page.number() && s.page < end) {
                s.packed = pack(Translation { rights, ..unpack(s.packed) });
            }
        } else {
            for n in page.number()..end {
                if let Some(i) = self.position(n) {
                    let t = unpack(self.slots[i].packed);
                    self.slots[i].packed = pack(Translation { rights, ..t });
                }
            }
        }
        Ok(TlbFlush::new(page, count))
    }

    fn translate(&self, page: Page) -> Option<Translation> {
        self.position(page.number()).map(|i| unpack(self.slots[i].packed))
    }

    fn flush(&self, _start: Page, _count: PageCount) {
        self.flushes.set(self.flushes.get() + 1);
    }

    fn flush_batch(&self, batch: &TlbFlush) {
        self.flushes.set(self.flushes.get() + 1);
        if batch.is_full() {
            self.full_flushes.set(self.full_flushes.get() + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memkit_testkit::SparseRam;
    use std::collections::BTreeMap;

    fn pg(n: usize) -> Page {
        Page::containing_address(VirtAddr::new(n * PAGE_SIZE))
    }

    #[test]
    fn table_matches_a_btreemap() {
        let mut mmu = SoftMmu::new();
        let mut model = BTreeMap::new();
        let mut x: u64 = 12345;
        let steps = if cfg!(miri) { 500 } else { 20_000 };
        for _ in 0..steps {
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

    #[test]
    fn translations_keep_frame_rights_and_cache() {
        let mut mmu = SoftMmu::new();
        let modes = [CacheMode::WriteBack, CacheMode::WriteCombining, CacheMode::Uncached];
        let rights = [Rights::READ, Rights::RW, Rights::RWX, Rights::empty()];
        let top = (memkit_types::PhysAddr::LIMIT >> memkit_types::PAGE_SHIFT) - 2;
        for (n, (&cache, &r)) in modes.iter().cycle().zip(rights.iter()).enumerate() {
            let frame = Frame::from_number(top - n as u64);
            mmu.map(pg(n), frame, PageCount::new(1), r, cache).unwrap().ignore();
            assert_eq!(mmu.translate(pg(n)), Some(Translation { frame, rights: r, cache }));
            mmu.check_invariants();
        }
        let beyond = Frame::from_number(top);
        assert_eq!(
            mmu.map(pg(9), beyond, PageCount::new(2), Rights::RW, CacheMode::WriteBack).unwrap_err(),
            MapError::InvalidFrame(beyond)
        );
        assert_eq!(
            mmu.map(pg(1), beyond, PageCount::new(1), Rights::RW, CacheMode::WriteBack).unwrap_err(),
            MapError::AlreadyMapped(pg(1))
        );
        assert_eq!(mmu.translate(pg(9)), None);
        assert_eq!(mmu.mapped_pages(), 4);
        mmu.check_invariants();
    }
}
