//! x86_64 page tables as memkit's [`Mmu`], built with the `x86_64` crate's paging structures
//! and fed page-table frames by memkit's frame allocator.
//!
//! ```text
//!   PML4 (root frame) ─▶ PDPT ─▶ PD ─▶ PT ─▶ 4 KiB frame
//!   every table is a frame from a memkit FrameSource, reached through the physical window
//!   (identity at boot, the higher-half direct map afterwards): OffsetPageTable(window offset)
//! ```
//!
//! A [`PageTableMmu`] translates the pages of one window of the virtual address space (an
//! address space's user window, or the kernel's own ranges); a page outside it is
//! [`MapError::OutOfRange`]. It frees the tables it created, never the frames it maps: those
//! belong to whoever asked for the mapping (a dataspace).
//!
//! An address space's table maps 2 MiB blocks with one page-directory entry
//! ([`Mmu::map_large`]). An unmap or a protect of part of such an entry splits it first: a
//! new page table holding the 512 small translations takes its place, so the other pages
//! keep theirs; where no frame is left for that table, the whole entry goes (its pages fault
//! again, which is always correct). A flush of whole large entries is one `invlpg` per
//! entry ([`Mmu::flush_large`], counted in [`crate::smp::FLUSHES`]`.large`).
//!
//! # Unsafe
//! Page tables are frames from a `FrameSource`, owned by the table that received them, and
//! reached through the physical window, which maps all RAM; mapping, unmapping and protecting
//! pages touches only this MMU's window, where no Rust object lives.

use memkit_region::{EntrySize, LARGE_PAGES, MapError, Mmu, TlbFlush, Translation};
use memkit_types::{CacheMode, Frame, FrameCount, FrameSource, Order, PAGE_SIZE, Page, PageCount, Rights};
use x86_64::structures::paging::mapper::{MapToError, MappedFrame, TranslateResult, UnmapError};
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, PageTable, PageTableFlags, PhysFrame, Size2MiB, Size4KiB, Translate,
};

use crate::phys_window;

fn to_x86_frame<S: x86_64::structures::paging::PageSize>(frame: Frame) -> PhysFrame<S> {
    PhysFrame::containing_address(x86_64::PhysAddr::new(frame.start_address().as_u64()))
}

fn to_x86_page<S: x86_64::structures::paging::PageSize>(page: Page) -> x86_64::structures::paging::Page<S> {
    x86_64::structures::paging::Page::containing_address(x86_64::VirtAddr::new(page.start_address().as_u64()))
}

fn from_x86_frame(frame: PhysFrame) -> Frame {
    Frame::from_number(frame.start_address().as_u64() / PAGE_SIZE as u64)
}

/// memkit's frame allocator (any [`FrameSource`]) as the `x86_64` crate's [`FrameAllocator`]:
/// where new page tables come from. It counts the frames it handed out.
#[derive(Debug)]
pub(crate) struct TableFrames<'s, S: FrameSource + ?Sized> {
    source: &'s S,
    allocated: u64,
}

impl<'s, S: FrameSource + ?Sized> TableFrames<'s, S> {
    /// Hands out frames of `source`.
    pub(crate) fn new(source: &'s S) -> Self {
        TableFrames { source, allocated: 0 }
    }
}

// SAFETY: every frame comes from the source's `allocate`, which hands a run to exactly one
// owner until it is freed; the page table that receives it is that owner.
unsafe impl<S: FrameSource + ?Sized> FrameAllocator<Size4KiB> for TableFrames<'_, S> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let frame = self.source.allocate(FrameCount::new(1), Order::ZERO, None).ok()?;
        self.allocated += 1;
        Some(to_x86_frame(frame))
    }
}

/// The page-table entry flags for `rights` and `cache`.
///
/// x86_64 cannot deny reads of a present page, so any non-empty rights map readable;
/// `EXECUTE` clears `NO_EXECUTE`. Write-combining uses PAT entry 1, which the kernel programs
/// to WC at boot ([`crate::cpu::init`]).
fn flags_for(rights: Rights, cache: CacheMode) -> PageTableFlags {
    let mut flags = PageTableFlags::PRESENT;
    if rights.contains(Rights::WRITE) {
        flags |= PageTableFlags::WRITABLE;
    }
    if !rights.contains(Rights::EXECUTE) && crate::cpu::no_execute_enabled() {
        flags |= PageTableFlags::NO_EXECUTE;
    }
    match cache {
        CacheMode::WriteBack => {}
        CacheMode::WriteCombining => flags |= PageTableFlags::WRITE_THROUGH,
        CacheMode::Uncached => flags |= PageTableFlags::WRITE_THROUGH | PageTableFlags::NO_CACHE,
    }
    flags
}

fn rights_of(flags: PageTableFlags) -> Rights {
    let mut rights = Rights::READ;
    if flags.contains(PageTableFlags::WRITABLE) {
        rights |= Rights::WRITE;
    }
    if !flags.contains(PageTableFlags::NO_EXECUTE) {
        rights |= Rights::EXECUTE;
    }
    rights
}

fn cache_of(flags: PageTableFlags) -> CacheMode {
    if flags.contains(PageTableFlags::NO_CACHE) {
        CacheMode::Uncached
    } else if flags.contains(PageTableFlags::WRITE_THROUGH) {
        CacheMode::WriteCombining
    } else {
        CacheMode::WriteBack
    }
}

/// The page table in `frame`, through the physical window.
///
/// Every reference it returns is used within one call of a [`PageTableMmu`] method and
/// dropped before the method returns; the MMU is the only code that forms references to its
/// tables, so no two of them overlap.
fn table_at<'t>(frame: Frame) -> &'t mut PageTable {
    let ptr = phys_window::current().ptr(frame.start_address(), PAGE_SIZE).cast::<PageTable>();
    // SAFETY: `frame` is a page-table frame reached through the physical window (mapped,
    // page aligned, a `PageTable` for any bit pattern); see above for exclusivity.
    unsafe { &mut *ptr }
}

/// A mapper for the tree whose root is `root`, valid while the window does not change
/// (within one call).
fn mapper<'t>(root: Frame) -> OffsetPageTable<'t> {
    let offset = x86_64::VirtAddr::new(phys_window::current().offset());
    // SAFETY: the window maps all RAM at `offset`, so every table of the tree is reachable at
    // `offset + its physical address`.
    unsafe { OffsetPageTable::new(table_at(root), offset) }
}

/// The flags of the tables on the way to a mapping: permissive, the leaf decides.
const TABLE_FLAGS: PageTableFlags = PageTableFlags::PRESENT.union(PageTableFlags::WRITABLE);

/// A 4-level page table whose root is `root`, translating the pages of one window.
#[derive(Debug)]
pub(crate) struct PageTableMmu<'s, S: FrameSource + ?Sized> {
    root: Frame,
    window: Option<(Page, PageCount)>,
    frames: TableFrames<'s, S>,
}

impl<'s, S: FrameSource + ?Sized> PageTableMmu<'s, S> {
    /// A page table with a fresh, zeroed root from `source`, translating the pages of
    /// `window` (`None`: the kernel's table, any canonical page), with every present PML4
    /// entry of the table at `template` copied (the kernel's part of every address space:
    /// its image and the direct map, whose lower tables are shared, never freed here).
    ///
    /// # Errors
    /// [`MapError::OutOfMemory`] when `source` has no frame for the root.
    pub(crate) fn new(
        source: &'s S,
        window: Option<(Page, PageCount)>,
        template: Option<Frame>,
    ) -> Result<Self, MapError> {
        let mut frames = TableFrames::new(source);
        let root = frames.allocate_frame().ok_or(MapError::OutOfMemory)?;
        let mmu = PageTableMmu { root: from_x86_frame(root), window, frames };
        let table = mmu.table(mmu.root);
        table.zero();
        if let Some(template) = template {
            let template = mmu.table(template);
            for (slot, entry) in template.iter().enumerate() {
                if !entry.is_unused() {
                    table[slot] = entry.clone();
                }
            }
        }
        Ok(mmu)
    }

    /// The root table's frame (what CR3 holds while this table is active).
    pub(crate) fn root(&self) -> Frame {
        self.root
    }

    /// The frames taken for tables so far.
    pub(crate) fn table_frames(&self) -> u64 {
        self.frames.allocated
    }

    fn table(&self, frame: Frame) -> &mut PageTable {
        table_at(frame)
    }

    fn check_range(&self, page: Page, count: PageCount) -> Result<(), MapError> {
        let end = page.checked_add(count).ok_or(MapError::OutOfRange(page))?;
        let Some((first, pages)) = self.window else { return Ok(()) };
        let window_end = first.checked_add(pages).ok_or(MapError::OutOfRange(page))?;
        if page < first || end > window_end {
            return Err(MapError::OutOfRange(page));
        }
        Ok(())
    }

    /// Maps `pages` 2 MiB pages from `page` on to the frames from `frame` on (both 2 MiB
    /// aligned): how the kernel builds its direct map.
    ///
    /// # Errors
    /// As [`Mmu::map`].
    pub(crate) fn map_huge(
        &mut self,
        page: Page,
        frame: Frame,
        huge_pages: usize,
        flags: PageTableFlags,
    ) -> Result<(), MapError> {
        let step = PageCount::new(512);
        self.check_range(page, PageCount::new(huge_pages * 512))?;
        let mut mapper = mapper(self.root);
        let (mut page, mut frame) = (page, frame);
        for _ in 0..huge_pages {
            let x86_page = to_x86_page::<Size2MiB>(page);
            // SAFETY: the frame is RAM the caller maps into the kernel's direct map, where
            // no other mapping of the range exists yet.
            let flush = unsafe {
                mapper.map_to_with_table_flags(
                    x86_page,
                    to_x86_frame::<Size2MiB>(frame),
                    flags | PageTableFlags::HUGE_PAGE,
                    TABLE_FLAGS,
                    &mut self.frames,
                )
            };
            flush.map_err(|e| map_error(e, page, frame))?.ignore();
            page = page.checked_add(step).ok_or(MapError::OutOfRange(page))?;
            frame = frame.checked_add(FrameCount::new(512)).ok_or(MapError::InvalidFrame(frame))?;
        }
        Ok(())
    }
}

/// The frame an entry points to.
fn entry_frame(entry: &PageTableEntry) -> Frame {
    Frame::from_number(entry.addr().as_u64() / PAGE_SIZE as u64)
}

/// The page `n` pages after `page` (`None` past the end of the address space).
fn nth(page: Page, n: usize) -> Option<Page> {
    page.checked_add(PageCount::new(n))
}

/// The pages from `page` to the end of its 2 MiB block.
fn to_block_end(page: Page) -> usize {
    LARGE_PAGES - page.number() % LARGE_PAGES
}

/// What a level-2 (page-directory) entry holds for a page.
enum Level2 {
    /// No table down to it, or an empty entry: nothing of the block is mapped.
    Empty,
    /// A page table: the block's pages are small.
    Table,
    /// One large entry for the block.
    Large,
}

impl<S: FrameSource + ?Sized> PageTableMmu<'_, S> {
    /// The level-2 entry that covers `page`, when the tables down to it exist.
    ///
    /// The reference is used within one call and dropped before any other reference to the
    /// tables is formed (see [`table_at`]).
    fn level2_entry<'t>(&self, page: Page) -> Option<&'t mut PageTableEntry> {
        let a = page.start_address().as_usize();
        let index = |level: usize| (a >> (12 + 9 * (level - 1))) & 511;
        let mut table = self.root;
        for level in [4, 3] {
            let entry = &table_at(table)[index(level)];
            if entry.is_unused() || entry.flags().contains(PageTableFlags::HUGE_PAGE) {
                return None;
            }
            table = entry_frame(entry);
        }
        Some(&mut table_at(table)[index(2)])
    }

    fn level2(&self, page: Page) -> Level2 {
        match self.level2_entry(page) {
            Some(e) if e.flags().contains(PageTableFlags::PRESENT | PageTableFlags::HUGE_PAGE) => Level2::Large,
            Some(e) if !e.is_unused() => Level2::Table,
            _ => Level2::Empty,
        }
    }

    /// Replaces the large entry covering `page` by a page table of its 512 small
    /// translations (the same frames, rights and cache mode); where no frame is left for
    /// the table, removes the entry (its pages fault again). Returns whether it split.
    fn split(&mut self, page: Page) -> bool {
        let Some(entry) = self.level2_entry(page) else { return false };
        let base = entry.addr().as_u64();
        let flags = entry.flags() - PageTableFlags::HUGE_PAGE;
        let Some(table) = self.frames.allocate_frame() else {
            if let Some(entry) = self.level2_entry(page) {
                entry.set_unused();
            }
            return false;
        };
        let table = from_x86_frame(table);
        let t = self.table(table);
        t.zero();
        for (i, e) in t.iter_mut().enumerate() {
            e.set_addr(x86_64::PhysAddr::new(base + (i * PAGE_SIZE) as u64), flags);
        }
        if let Some(entry) = self.level2_entry(page) {
            entry.set_addr(x86_64::PhysAddr::new(table.start_address().as_u64()), TABLE_FLAGS);
        }
        true
    }

    /// Frees the tables below `table` (at `level`, 4 = PML4) whose entries `slots` selects,
    /// and counts them.
    fn free_tables(&mut self, table: Frame, level: u8, slots: core::ops::Range<usize>) {
        for slot in slots {
            let entry = &table_at(table)[slot];
            if entry.is_unused() || entry.flags().contains(PageTableFlags::HUGE_PAGE) || level == 1 {
                continue;
            }
            let child = Frame::from_number(entry.addr().as_u64() / PAGE_SIZE as u64);
            if level > 2 {
                self.free_tables(child, level - 1, 0..512);
            }
            let _ = self.frames.source.free(child, FrameCount::new(1));
            self.frames.allocated -= 1;
        }
    }
}

/// An address space's table gives back the tables of its window, and its root; the kernel's
/// part (copied PML4 entries) is not its own and stays.
impl<S: FrameSource + ?Sized> Drop for PageTableMmu<'_, S> {
    fn drop(&mut self) {
        let Some((first, pages)) = self.window else { return };
        let slot_of = |page: Page| (page.start_address().as_usize() >> 39) & 511;
        let last = first.checked_add(PageCount::new(pages.get().saturating_sub(1))).unwrap_or(first);
        self.free_tables(self.root, 4, slot_of(first)..slot_of(last) + 1);
        let _ = self.frames.source.free(self.root, FrameCount::new(1));
        self.frames.allocated -= 1;
    }
}

/// The flush owed for the `count` pages from `page` on: of large entries alone when `large`
/// and the pages are whole 2 MiB blocks.
fn flush_of(page: Page, count: PageCount, large: bool) -> TlbFlush {
    if large && page.number().is_multiple_of(LARGE_PAGES) && count.get().is_multiple_of(LARGE_PAGES) {
        TlbFlush::large(page, count)
    } else {
        TlbFlush::new(page, count)
    }
}

fn map_error<S: x86_64::structures::paging::PageSize>(e: MapToError<S>, page: Page, frame: Frame) -> MapError {
    match e {
        MapToError::FrameAllocationFailed => MapError::OutOfMemory,
        MapToError::ParentEntryHugePage | MapToError::PageAlreadyMapped(_) => MapError::AlreadyMapped(page),
        #[expect(unreachable_patterns, reason = "the enum is not exhaustive in every version")]
        _ => MapError::InvalidFrame(frame),
    }
}

impl<S: FrameSource + ?Sized> Mmu for PageTableMmu<'_, S> {
    fn map(
        &mut self,
        page: Page,
        frame: Frame,
        count: PageCount,
        rights: Rights,
        cache: CacheMode,
    ) -> Result<TlbFlush, MapError> {
        self.check_range(page, count)?;
        let flags = flags_for(rights, cache);
        for i in 0..count.get() {
            let p = page.checked_add(PageCount::new(i)).ok_or(MapError::OutOfRange(page))?;
            if self.translate(p).is_some() {
                return Err(MapError::AlreadyMapped(p));
            }
        }
        let mut mapper = mapper(self.root);
        for i in 0..count.get() {
            let (p, f) = (page.checked_add(PageCount::new(i)), frame.checked_add(FrameCount::new(i as u64)));
            let (Some(p), Some(f)) = (p, f) else { return Err(MapError::InvalidFrame(frame)) };
            // SAFETY: the page is in this MMU's window, which holds no Rust object, and was
            // checked unmapped above; the frame belongs to the caller.
            let result = unsafe {
                mapper.map_to_with_table_flags(
                    to_x86_page::<Size4KiB>(p),
                    to_x86_frame(f),
                    flags,
                    TABLE_FLAGS,
                    &mut self.frames,
                )
            };
            match result {
                Ok(flush) => flush.ignore(),
                Err(e) => {
                    // Undo the pages mapped so far: a failed map changes nothing.
                    for j in 0..i {
                        if let Some(q) = page.checked_add(PageCount::new(j)) {
                            let _ = mapper.unmap(to_x86_page::<Size4KiB>(q));
                        }
                    }
                    return Err(map_error(e, p, f));
                }
            }
        }
        // Nothing was mapped before, and x86 caches no translation (nor paging-structure
        // entry) that is not present (Intel SDM vol. 3, 4.10.2.3 and 4.10.3.1): no CPU can
        // hold a stale entry for these pages, so a new mapping owes no flush, and no round
        // of IPIs. An access that raced with it faults and finds it mapped.
        Ok(TlbFlush::none())
    }

    fn unmap(&mut self, page: Page, count: PageCount) -> Result<TlbFlush, MapError> {
        self.check_range(page, count)?;
        // Whether only whole large entries went (one `invlpg` each then).
        let (mut large, mut small) = (false, false);
        let mut i = 0;
        while i < count.get() {
            let Some(p) = nth(page, i) else { break };
            let rest = count.get() - i;
            match self.level2(p) {
                Level2::Empty => {
                    i += to_block_end(p);
                    continue;
                }
                Level2::Large if p.number().is_multiple_of(LARGE_PAGES) && rest >= LARGE_PAGES => {
                    if let Some(entry) = self.level2_entry(p) {
                        entry.set_unused();
                    }
                    large = true;
                    i += LARGE_PAGES;
                    continue;
                }
                Level2::Large => {
                    small = true;
                    if !self.split(p) {
                        // The whole entry went.
                        i += to_block_end(p);
                        continue;
                    }
                }
                Level2::Table => {}
            }
            let mut mapper = mapper(self.root);
            match mapper.unmap(to_x86_page::<Size4KiB>(p)) {
                Ok((_, flush)) => {
                    flush.ignore();
                    small = true;
                }
                Err(UnmapError::PageNotMapped | UnmapError::ParentEntryHugePage) => {}
                Err(UnmapError::InvalidFrameAddress(_)) => return Err(MapError::OutOfRange(p)),
            }
            i += 1;
        }
        Ok(flush_of(page, count, large && !small))
    }

    fn protect(&mut self, page: Page, count: PageCount, rights: Rights) -> Result<TlbFlush, MapError> {
        self.check_range(page, count)?;
        let (mut large, mut small) = (false, false);
        let mut i = 0;
        while i < count.get() {
            let Some(p) = nth(page, i) else { break };
            let rest = count.get() - i;
            match self.level2(p) {
                Level2::Empty => {
                    i += to_block_end(p);
                    continue;
                }
                Level2::Large if p.number().is_multiple_of(LARGE_PAGES) && rest >= LARGE_PAGES => {
                    if let Some(entry) = self.level2_entry(p) {
                        let flags = flags_for(rights, cache_of(entry.flags())) | PageTableFlags::HUGE_PAGE;
                        entry.set_flags(flags);
                    }
                    large = true;
                    i += LARGE_PAGES;
                    continue;
                }
                Level2::Large => {
                    small = true;
                    if !self.split(p) {
                        i += to_block_end(p);
                        continue;
                    }
                }
                Level2::Table => {}
            }
            i += 1;
            let Some(old) = self.translate(p) else { continue };
            small = true;
            let flags = flags_for(rights, old.cache);
            let mut mapper = mapper(self.root);
            // SAFETY: the page is in this MMU's window (no Rust object lives there) and
            // mapped; only its rights change.
            let result = unsafe { mapper.update_flags(to_x86_page::<Size4KiB>(p), flags) };
            result.map_err(|_| MapError::NotMapped(p))?.ignore();
        }
        Ok(flush_of(page, count, large && !small))
    }

    fn translate(&self, page: Page) -> Option<Translation> {
        self.translate_entry(page).map(|(t, _)| t)
    }

    fn translate_entry(&self, page: Page) -> Option<(Translation, EntrySize)> {
        match mapper(self.root).translate(x86_64::VirtAddr::new(page.start_address().as_u64())) {
            TranslateResult::Mapped { frame: MappedFrame::Size4KiB(frame), flags, .. } => Some((
                Translation { frame: from_x86_frame(frame), rights: rights_of(flags), cache: cache_of(flags) },
                EntrySize::Small,
            )),
            TranslateResult::Mapped { frame: MappedFrame::Size2MiB(frame), offset, flags } => {
                let frame = Frame::from_number((frame.start_address().as_u64() + offset) / PAGE_SIZE as u64);
                Some((Translation { frame, rights: rights_of(flags), cache: cache_of(flags) }, EntrySize::Large))
            }
            _ => None,
        }
    }

    /// An address space's table does; the kernel's own leaves its direct map alone.
    fn maps_large(&self) -> bool {
        self.window.is_some()
    }

    fn map_large(&mut self, page: Page, frame: Frame, rights: Rights, cache: CacheMode) -> Result<TlbFlush, MapError> {
        let count = PageCount::new(LARGE_PAGES);
        if !self.maps_large()
            || !page.number().is_multiple_of(LARGE_PAGES)
            || !frame.number().is_multiple_of(LARGE_PAGES as u64)
        {
            return Err(MapError::Unsupported(page));
        }
        self.check_range(page, count)?;
        frame.checked_add(FrameCount::new(LARGE_PAGES as u64)).ok_or(MapError::InvalidFrame(frame))?;
        match self.level2(page) {
            Level2::Large => return Err(MapError::AlreadyMapped(page)),
            Level2::Table => {
                // An empty page table left by small pages that went: it goes, once no CPU
                // can still walk it (the flush also drops cached upper-level entries).
                let Some(entry) = self.level2_entry(page) else { return Err(MapError::AlreadyMapped(page)) };
                let table = entry_frame(entry);
                if let Some(used) = self.table(table).iter().position(|e| !e.is_unused()) {
                    return Err(MapError::AlreadyMapped(nth(page, used).unwrap_or(page)));
                }
                entry.set_unused();
                self.flush_large(page, count);
                let _ = self.frames.source.free(table, FrameCount::new(1));
                self.frames.allocated -= 1;
            }
            Level2::Empty => {}
        }
        let mut mapper = mapper(self.root);
        // SAFETY: the block is in this MMU's window, which holds no Rust object, and nothing
        // of it is mapped (checked above); the frames belong to the caller.
        let result = unsafe {
            mapper.map_to_with_table_flags(
                to_x86_page::<Size2MiB>(page),
                to_x86_frame::<Size2MiB>(frame),
                flags_for(rights, cache) | PageTableFlags::HUGE_PAGE,
                TABLE_FLAGS,
                &mut self.frames,
            )
        };
        result.map_err(|e| map_error(e, page, frame))?.ignore();
        Ok(TlbFlush::large(page, count))
    }

    /// One `invlpg` per 2 MiB entry, here and on every other CPU with this table active, in
    /// one round of IPIs; a whole-TLB flush beyond [`TlbFlush::RANGES`] entries.
    fn flush_large(&self, start: Page, count: PageCount) {
        let root = self.window.map(|_| self.root);
        let entries = count.get().div_ceil(LARGE_PAGES);
        crate::smp::FLUSHES.large.fetch_add(entries as u64, core::sync::atomic::Ordering::Relaxed);
        // One address per entry (an invlpg of any address in a 2 MiB entry drops the whole
        // entry), all in one round of IPIs; past the batch's ranges, the whole TLB.
        let mut batch = TlbFlush::none();
        for k in 0..entries {
            if let Some(p) = nth(start, k * LARGE_PAGES) {
                batch.add_pages(p, PageCount::new(1));
            }
        }
        crate::smp::flush_batch(root, &batch);
        batch.ignore();
    }

    /// Flushes on this CPU and shoots the pages down on every other CPU that has this
    /// table active (every CPU, for the kernel's own table).
    fn flush(&self, start: Page, count: PageCount) {
        let root = self.window.map(|_| self.root);
        crate::smp::flush(root, start, count.get() as u64);
    }

    /// Flushes the whole batch in one round of IPIs.
    fn flush_batch(&self, batch: &TlbFlush) {
        crate::smp::flush_batch(self.window.map(|_| self.root), batch);
    }
}
