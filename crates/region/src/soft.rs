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
//!
//! Large (2 MiB) entries ([`Mmu::map_large`]) live beside the table, one per block in an
//! ordered map; a lookup consults them only when there are any. An unmap or a protect of
//! part of a large entry splits it into its 512 small translations first.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;

use memkit_types::{Access, CacheMode, Frame, PAGE_SIZE, Page, PageCount, PhysAddr, PhysMemory, Rights, VirtAddr};

use crate::mmu::{EntrySize, LARGE_PAGES, MapError, Mmu, TlbFlush, Translation};

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
/// translation sits in the probe sequence of its page with no vacant slot before it. A
/// large entry's block and frame are 2 MiB aligned, and no small translation lies in its
/// block.
#[derive(Debug, Clone)]
pub struct SoftMmu {
    slots: Vec<Slot>,
    len: usize,
    /// The large entries: block number (page number / 512) ─▶ the packed translation of
    /// the block's first page.
    large: BTreeMap<usize, u64>,
    flushes: Cell<u64>,
    large_flushes: Cell<u64>,
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
        SoftMmu {
            slots: vec![VACANT; n],
            len: 0,
            large: BTreeMap::new(),
            flushes: Cell::new(0),
            large_flushes: Cell::new(0),
            full_flushes: Cell::new(0),
        }
    }

    /// The number of mapped pages (those of large entries included).
    #[must_use]
    pub fn mapped_pages(&self) -> usize {
        self.len + self.large.len() * LARGE_PAGES
    }

    /// The number of flushes so far: each [`Mmu::flush`] and [`Mmu::flush_large`] call and
    /// each batch ([`Mmu::flush_batch`]) counts once, as one round of IPIs would on a
    /// multiprocessor.
    #[must_use]
    pub fn flush_count(&self) -> u64 {
        self.flushes.get()
    }

    /// The number of flushes of large entries alone so far ([`Mmu::flush_large`]).
    #[must_use]
    pub fn large_flush_count(&self) -> u64 {
        self.large_flushes.get()
    }

    /// The number of flushes so far that emptied the whole TLB (a full batch).
    #[must_use]
    pub fn full_flush_count(&self) -> u64 {
        self.full_flushes.get()
    }

    /// Every translation, page by page (the pages of a large entry one by one), ordered by
    /// page.
    #[must_use]
    pub fn translations(&self) -> Vec<(Page, Translation)> {
        let mut v: Vec<(Page, Translation)> =
            self.slots.iter().filter(|s| s.page != EMPTY).map(|s| (page_numbered(s.page), unpack(s.packed))).collect();
        for (&block, &packed) in &self.large {
            v.extend((0..LARGE_PAGES).map(|i| (page_numbered(block * LARGE_PAGES + i), within(packed, i))));
        }
        v.sort_unstable_by_key(|(p, _)| *p);
        v
    }

    /// The large entries: each one's first page and translation, ordered by page.
    #[must_use]
    pub fn large_entries(&self) -> Vec<(Page, Translation)> {
        self.large.iter().map(|(&block, &packed)| (page_numbered(block * LARGE_PAGES), unpack(packed))).collect()
    }

    /// Replaces the large entry of `block` by its 512 small translations.
    fn split(&mut self, block: usize) {
        let Some(packed) = self.large.remove(&block) else { return };
        self.make_room(LARGE_PAGES);
        for i in 0..LARGE_PAGES {
            let n = block * LARGE_PAGES + i;
            let at = self.vacancy(n);
            self.slots[at] = Slot { page: n, packed: pack(within(packed, i)) };
            self.len += 1;
        }
    }

    /// Handles the large entries among the pages `first .. end` before an unmap or a protect:
    /// those wholly inside are returned (their blocks), those partly inside are split.
    /// Returns whether any was split.
    fn large_in(&mut self, first: usize, end: usize, whole: &mut Vec<usize>) -> bool {
        if self.large.is_empty() || first >= end {
            return false;
        }
        let blocks: Vec<usize> =
            self.large.range(first / LARGE_PAGES..=(end - 1) / LARGE_PAGES).map(|(&b, _)| b).collect();
        let mut split = false;
        for b in blocks {
            if b * LARGE_PAGES >= first && (b + 1) * LARGE_PAGES <= end {
                whole.push(b);
            } else {
                self.split(b);
                split = true;
            }
        }
        split
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
            assert!(!self.large.contains_key(&(s.page / LARGE_PAGES)), "a small translation inside a large entry");
        }
        for (&block, &packed) in &self.large {
            assert_eq!(unpack(packed).frame.number() % LARGE_PAGES as u64, 0, "a large entry's frame misaligned");
            assert!(block.checked_mul(LARGE_PAGES).is_some(), "a large entry beyond the address space");
        }
    }
}

/// The page numbered `n`.
fn page_numbered(n: usize) -> Page {
    Page::containing_address(VirtAddr::new(n * PAGE_SIZE))
}

/// The translation of page `i` of the large entry whose first page translates as `packed`.
fn within(packed: u64, i: usize) -> Translation {
    let t = unpack(packed);
    Translation { frame: Frame::from_number(t.frame.number() + i as u64), ..t }
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
        if first < end
            && let Some((&b, _)) = self.large.range(first / LARGE_PAGES..=(end - 1) / LARGE_PAGES).next()
        {
            return Err(MapError::AlreadyMapped(page_numbered((b * LARGE_PAGES).max(first))));
        }
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
        let mut whole = Vec::new();
        let split = self.large_in(page.number(), end, &mut whole);
        for b in &whole {
            self.large.remove(b);
        }
        if self.len == 0 || (!split && !whole.is_empty() && self.small_none_in(page.number(), end)) {
            // Nothing small is mapped there: nothing to walk.
            return Ok(self.flush_of(page, count, !split && !whole.is_empty()));
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
        let mut whole = Vec::new();
        let split = self.large_in(page.number(), end, &mut whole);
        for b in &whole {
            if let Some(packed) = self.large.get_mut(b) {
                *packed = pack(Translation { rights, ..unpack(*packed) });
            }
        }
        if !split && !whole.is_empty() && self.small_none_in(page.number(), end) {
            return Ok(self.flush_of(page, count, true));
        }
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
        self.translate_entry(page).map(|(t, _)| t)
    }

    fn translate_entry(&self, page: Page) -> Option<(Translation, EntrySize)> {
        let n = page.number();
        if let Some(i) = self.position(n) {
            return Some((unpack(self.slots[i].packed), EntrySize::Small));
        }
        if self.large.is_empty() {
            return None;
        }
        self.large.get(&(n / LARGE_PAGES)).map(|&packed| (within(packed, n % LARGE_PAGES), EntrySize::Large))
    }

    fn maps_large(&self) -> bool {
        true
    }

    fn map_large(&mut self, page: Page, frame: Frame, rights: Rights, cache: CacheMode) -> Result<TlbFlush, MapError> {
        let first = page.number();
        if !first.is_multiple_of(LARGE_PAGES) || !frame.number().is_multiple_of(LARGE_PAGES as u64) {
            return Err(MapError::Unsupported(page));
        }
        let count = PageCount::new(LARGE_PAGES);
        let end = end_number(page, count)?;
        frame.checked_add(memkit_types::FrameCount::new(LARGE_PAGES as u64)).ok_or(MapError::InvalidFrame(frame))?;
        if self.large.contains_key(&(first / LARGE_PAGES)) {
            return Err(MapError::AlreadyMapped(page));
        }
        if self.len > 0
            && let Some(n) = (first..end).find(|&n| self.position(n).is_some())
        {
            return Err(MapError::AlreadyMapped(page_numbered(n)));
        }
        self.large.insert(first / LARGE_PAGES, pack(Translation { frame, rights, cache }));
        Ok(TlbFlush::large(page, count))
    }

    fn flush(&self, _start: Page, _count: PageCount) {
        self.flushes.set(self.flushes.get() + 1);
    }

    fn flush_large(&self, _start: Page, _count: PageCount) {
        self.flushes.set(self.flushes.get() + 1);
        self.large_flushes.set(self.large_flushes.get() + 1);
    }

    fn flush_batch(&self, batch: &TlbFlush) {
        self.flushes.set(self.flushes.get() + 1);
        if batch.is_full() {
            self.full_flushes.set(self.full_flushes.get() + 1);
        }
    }
}

impl SoftMmu {
    /// Whether no small translation lies among the pages `first .. end`.
    fn small_none_in(&self, first: usize, end: usize) -> bool {
        if self.len == 0 {
            return true;
        }
        if end - first > self.len {
            return !self.slots.iter().any(|s| s.page != EMPTY && s.page >= first && s.page < end);
        }
        (first..end).all(|n| self.position(n).is_none())
    }

    /// The flush owed for the `count` pages from `page` on: of large entries alone when
    /// `large` and the pages are whole 2 MiB blocks.
    fn flush_of(&self, page: Page, count: PageCount, large: bool) -> TlbFlush {
        if large && page.number().is_multiple_of(LARGE_PAGES) && count.get().is_multiple_of(LARGE_PAGES) {
            TlbFlush::large(page, count)
        } else {
            TlbFlush::new(page, count)
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

    /// Small and large entries against a plain map of page ─▶ (frame, rights): every map,
    /// large map, unmap and protect (of whole entries and of parts of them, which split
    /// them), with the invariants checked after each step.
    #[test]
    fn large_entries_match_a_btreemap() {
        const L: usize = LARGE_PAGES;
        let mut mmu = SoftMmu::new();
        let mut model: BTreeMap<usize, (u64, Rights)> = BTreeMap::new();
        let mut x: u64 = 0x5eed;
        let steps = if cfg!(miri) { 60 } else { 3_000 };
        let rights = [Rights::READ, Rights::RW, Rights::RWX];
        for step in 0..steps {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Four blocks of 512 pages; ranges near their edges.
            let block = (x % 4) as usize;
            let n = block * L + [0, 1, 255, 511, 510][((x >> 8) % 5) as usize];
            let count = [1, 2, 3, L, L + 1, 2 * L][((x >> 16) % 6) as usize];
            let r = rights[((x >> 24) % 3) as usize];
            let flushes = mmu.flush_count();
            match (x >> 40) % 4 {
                0 => {
                    let frame = Frame::from_number(((x >> 32) % 8) * L as u64 + L as u64);
                    let got = mmu.map_large(pg(block * L), frame, r, CacheMode::WriteBack);
                    let free = (block * L..(block + 1) * L).all(|p| !model.contains_key(&p));
                    assert_eq!(got.is_ok(), free, "step {step}");
                    if let Ok(f) = got {
                        assert!(f.is_large());
                        f.flush(&mmu);
                        for i in 0..L {
                            model.insert(block * L + i, (frame.number() + i as u64, r));
                        }
                    }
                }
                1 => {
                    let got = mmu.map(pg(n), Frame::from_number(n as u64), PageCount::new(1), r, CacheMode::WriteBack);
                    assert_eq!(got.is_ok(), !model.contains_key(&n), "step {step}");
                    if let Ok(f) = got {
                        f.ignore();
                        model.insert(n, (n as u64, r));
                    }
                }
                2 => {
                    mmu.unmap(pg(n), PageCount::new(count)).unwrap().flush(&mmu);
                    for p in n..n + count {
                        model.remove(&p);
                    }
                }
                _ => {
                    mmu.protect(pg(n), PageCount::new(count), r).unwrap().flush(&mmu);
                    for p in n..n + count {
                        if let Some(e) = model.get_mut(&p) {
                            e.1 = r;
                        }
                    }
                }
            }
            assert!(mmu.flush_count() <= flushes + 1);
            mmu.check_invariants();
            assert_eq!(mmu.mapped_pages(), model.len(), "step {step}");
            let got: Vec<(usize, u64, Rights)> =
                mmu.translations().iter().map(|(p, t)| (p.number(), t.frame.number(), t.rights)).collect();
            let want: Vec<(usize, u64, Rights)> = model.iter().map(|(&p, &(f, r))| (p, f, r)).collect();
            assert_eq!(got, want, "step {step}");
            for (&b, _) in mmu.large.iter() {
                assert!(mmu.translate_entry(pg(b * L + 7)).is_some_and(|(_, size)| size == EntrySize::Large));
            }
        }
        assert!(mmu.large_flush_count() > 0);
    }

    #[test]
    fn a_large_entry_splits_on_a_partial_unmap_and_keeps_the_other_pages() {
        const L: usize = LARGE_PAGES;
        let ram = SparseRam::new();
        let mut mmu = SoftMmu::new();
        let frame = Frame::from_number(4 * L as u64);
        // Misaligned pages or frames are refused, and nothing is mapped.
        assert_eq!(
            mmu.map_large(pg(L + 1), frame, Rights::RW, CacheMode::WriteBack).unwrap_err(),
            MapError::Unsupported(pg(L + 1))
        );
        assert_eq!(
            mmu.map_large(pg(L), Frame::from_number(4 * L as u64 + 1), Rights::RW, CacheMode::WriteBack).unwrap_err(),
            MapError::Unsupported(pg(L))
        );
        assert_eq!(mmu.mapped_pages(), 0);
        mmu.map_large(pg(L), frame, Rights::RW, CacheMode::WriteBack).unwrap().flush(&mmu);
        assert_eq!(
            mmu.large_entries(),
            vec![(pg(L), Translation { frame, rights: Rights::RW, cache: CacheMode::WriteBack })]
        );
        assert_eq!(mmu.large_flush_count(), 1);
        // A store through the large entry lands in the block's frames.
        let at = VirtAddr::new(L * PAGE_SIZE + 3 * PAGE_SIZE - 2);
        mmu.store(&ram, at, &[1, 2, 3, 4]).unwrap();
        assert_eq!(ram.read_byte(PhysAddr::new((4 * L as u64 + 3) * PAGE_SIZE as u64)), 3);
        // A small map inside it is refused.
        assert_eq!(
            mmu.map(pg(L + 5), Frame::from_number(1), PageCount::new(1), Rights::RW, CacheMode::WriteBack).unwrap_err(),
            MapError::AlreadyMapped(pg(L + 5))
        );
        // Unmapping one page splits the entry: the others keep their frames.
        let f = mmu.unmap(pg(L + 2), PageCount::new(1)).unwrap();
        assert!(!f.is_large());
        f.flush(&mmu);
        mmu.check_invariants();
        assert!(mmu.large_entries().is_empty());
        assert_eq!(mmu.mapped_pages(), L - 1);
        assert_eq!(
            mmu.translate_entry(pg(L + 3)).map(|(t, s)| (t.frame, s)),
            Some((Frame::from_number(4 * L as u64 + 3), EntrySize::Small))
        );
        assert!(mmu.translate(pg(L + 2)).is_none());
        let mut b = [0; 2];
        mmu.load(&ram, VirtAddr::new(L * PAGE_SIZE + 3 * PAGE_SIZE), &mut b).unwrap();
        assert_eq!(b, [3, 4]);
        assert!(mmu.load(&ram, at, &mut b).is_err(), "the unmapped page faults");
        // A whole large entry is unmapped with one large flush.
        mmu.map_large(pg(3 * L), frame, Rights::READ, CacheMode::WriteBack).unwrap().ignore();
        let f = mmu.unmap(pg(3 * L), PageCount::new(L)).unwrap();
        assert!(f.is_large());
        f.ignore();
        assert_eq!(mmu.mapped_pages(), L - 1);
        mmu.check_invariants();
    }
}
