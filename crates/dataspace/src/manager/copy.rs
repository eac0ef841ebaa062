//! Copies: `l4dm_copy`, `l4dm_copy_long` and `l4dm_memphys_copy`; copy-on-write sharing of
//! whole pages, eager byte copies otherwise.

use memkit_types::{Access, FrameCount, FrameSource, Order, PAGE_SIZE, PhysAddr, PhysMemory, PhysPlacement};

use super::{
    Kind, Manager, NewDataspace, PAGE, PageRange, RevokeKind, Revoker, allocate_frames, lookup, lookup_open,
    make_writable,
};
use crate::entry::Entry;
use crate::error::{CopyError, CreateError};
use crate::flags::{CopyLength, DmFlags};
use crate::ids::{ClientId, DataspaceId, PoolId};
use crate::request::{CopyRequest, MemphysCopyRequest};

/// The copy's pool: the source's, or a pool number still to check.
#[derive(Clone, Copy)]
enum DestinationPool {
    Source,
    Number(u32),
}

/// Where a copy goes: its pool, its place in the pool, its least size and its alignment.
#[derive(Clone, Copy)]
struct Destination {
    pool: DestinationPool,
    placement: PhysPlacement,
    size: u64,
    align: u32,
}

impl<S: FrameSource, M: PhysMemory> Manager<S, M> {
    /// `l4dm_copy`: a copy of the whole dataspace, owned by `caller`, charged to the source's
    /// factory, in the source's pool. With [`DmFlags::COW`] (and neither source nor copy
    /// bound to their frames) the copy shares the source's frames until either side writes.
    ///
    /// # Errors
    /// As [`copy_long`](Manager::copy_long).
    pub fn copy<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        flags: DmFlags,
        name: &str,
        revoker: &mut R,
    ) -> Result<DataspaceId, CopyError> {
        self.copy_long(caller, ds, CopyRequest::new(0, 0, CopyLength::WholeDataspace).flags(flags).name(name), revoker)
    }

    /// `l4dm_copy_long`: copies `req.num` bytes from `req.src_offs` of `ds` to `req.dst_offs`
    /// of a new dataspace of `dst_offs + num` bytes (zeros before `dst_offs`). Offsets and
    /// lengths need no alignment: with [`DmFlags::COW`], when source and destination offsets
    /// are equal modulo the page size, the pages wholly inside the range are shared and only
    /// the partial edge pages are copied; otherwise every byte is copied.
    ///
    /// # Errors
    /// [`CopyError::InvalidId`], [`CopyError::PermissionDenied`] unless the caller's task
    /// owns `ds` and the id grants `READ`, [`CopyError::SourceOutOfRange`], [`CopyError::DestinationOutOfRange`],
    /// [`CopyError::Create`] (size, quota, memory).
    pub fn copy_long<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        req: CopyRequest<'_>,
        revoker: &mut R,
    ) -> Result<DataspaceId, CopyError> {
        let dst = Destination { pool: DestinationPool::Source, placement: PhysPlacement::AnyAddr, size: 0, align: 0 };
        self.copy_into(caller, ds, req, dst, revoker)
    }

    /// `l4dm_memphys_copy`: as [`copy_long`](Manager::copy_long), into pool `req.dst_pool`
    /// (the source's with [`DmFlags::SAME_POOL`]) at `req.dst_addr` (one contiguous run) or
    /// anywhere, of `max(dst_size, dst_offs + num)` bytes aligned to `dst_align` (log2).
    /// Unlike DMphys, [`DmFlags::COW`] is honoured for copies that are not bound to their
    /// frames: the copy shares the source's frames, and the pages it breaks come from
    /// `dst_pool`.
    ///
    /// # Errors
    /// As [`copy_long`](Manager::copy_long), and [`CreateError::PoolOutOfRange`] inside
    /// [`CopyError::Create`].
    pub fn memphys_copy<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        req: MemphysCopyRequest<'_>,
        revoker: &mut R,
    ) -> Result<DataspaceId, CopyError> {
        let pool = if req.copy.flags.contains(DmFlags::SAME_POOL) {
            DestinationPool::Source
        } else {
            DestinationPool::Number(req.dst_pool)
        };
        let dst = Destination { pool, placement: req.dst_addr, size: req.dst_size, align: req.dst_align };
        self.copy_into(caller, ds, req.copy, dst, revoker)
    }

    /// Checks a copy's arguments, the same for every entry point, before anything changes:
    /// the destination pool exists (checked first), the source exists and the caller may read
    /// it, the source range lies inside it, the destination range does not overflow. Returns
    /// the bytes to copy, the copy to create and the source's kind.
    fn check_copy<'a>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        req: &CopyRequest<'a>,
        dst: &Destination,
    ) -> Result<(u64, NewDataspace<'a>, Kind), CopyError> {
        let pool = match dst.pool {
            DestinationPool::Source => None,
            DestinationPool::Number(n) => {
                Some(PoolId::new(n).ok_or(CopyError::Create(CreateError::PoolOutOfRange(n)))?)
            }
        };
        let src = lookup_open(&mut self.slots, ds).ok_or(CopyError::InvalidId(ds))?;
        if src.owner.task != caller.task || !ds.rights().allows(Access::Read) {
            return Err(CopyError::PermissionDenied(ds, caller));
        }
        let (src_size, src_kind, src_pool, factory) = (src.size, src.kind, src.pool, src.factory);
        let src_offs = req.src_offs;
        let num = match req.num {
            CopyLength::WholeDataspace => {
                src_size.checked_sub(src_offs).ok_or(CopyError::SourceOutOfRange(src_offs, 0))?
            }
            CopyLength::Bytes(n) => {
                if src_offs.checked_add(n).is_none_or(|e| e > src_size) {
                    return Err(CopyError::SourceOutOfRange(src_offs, n));
                }
                n
            }
        };
        let dst_end = req.dst_offs.checked_add(num).ok_or(CopyError::DestinationOutOfRange(req.dst_offs, num))?;
        let pool = pool.unwrap_or(src_pool);
        let mut kind = Self::kind_of(req.flags);
        if matches!(dst.placement, PhysPlacement::Fixed(_)) {
            kind |= Kind::FIXED;
        }
        let new = NewDataspace {
            factory,
            owner: caller,
            size: dst_end.max(dst.size),
            kind,
            pool,
            align: dst.align,
            placement: dst.placement,
            name: req.name,
        };
        Ok((num, new, src_kind))
    }

    fn copy_into<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        req: CopyRequest<'_>,
        dst: Destination,
        revoker: &mut R,
    ) -> Result<DataspaceId, CopyError> {
        let (num, new, src_kind) = self.check_copy(caller, ds, &req, &dst)?;
        let kind = new.kind;
        let copy = self.create(new).map_err(CopyError::Create)?;
        let (src_offs, dst_offs) = (req.src_offs, req.dst_offs);
        let share = req.flags.contains(DmFlags::COW)
            && !kind.is_bound()
            && !src_kind.is_bound()
            && src_offs % PAGE == dst_offs % PAGE;
        match self.fill_copy(ds, copy, src_offs, dst_offs, num, share) {
            Ok(Some(shared)) => {
                revoker.revoke(ds, shared, RevokeKind::Write);
                Ok(copy)
            }
            Ok(None) => Ok(copy),
            Err(n) => {
                self.destroy(copy);
                Err(CopyError::Create(CreateError::OutOfMemory(n)))
            }
        }
    }

    /// Fills `copy` from `src`; returns the source pages that became shared.
    fn fill_copy(
        &mut self,
        src: DataspaceId,
        copy: DataspaceId,
        src_offs: u64,
        dst_offs: u64,
        num: u64,
        share: bool,
    ) -> Result<Option<PageRange>, FrameCount> {
        let dst_end = dst_offs + num;
        let mut shared: Option<PageRange> = None;
        // Take both entry tables out of their slots so both can be borrowed at once.
        let Some(s) = lookup(&mut self.slots, src) else { return Err(FrameCount::new(0)) };
        let mut src_entries = core::mem::take(&mut s.entries);
        let Some(d) = lookup(&mut self.slots, copy) else {
            if let Some(s) = lookup(&mut self.slots, src) {
                s.entries = src_entries;
            }
            return Err(FrameCount::new(0));
        };
        let dst_pool = d.pool;
        let mut dst_entries = core::mem::take(&mut d.entries);
        // The destination pages shared with the source: only those the copy covers wholly.
        // A partial page is copied byte by byte into a zeroed frame of its own, even at the
        // copy's end: the rest of the source's page may hold bytes the copy must never show
        // (a mapping shows the whole page).
        let all = if num == 0 { 0..0 } else { dst_offs / PAGE..dst_end.div_ceil(PAGE) };
        let middle = if share {
            let first = dst_offs.div_ceil(PAGE);
            first..(dst_end / PAGE).max(first)
        } else {
            all.end..all.end
        };
        if !middle.is_empty() {
            let first_src = (middle.start * PAGE - dst_offs + src_offs) / PAGE;
            let src_pages = first_src as usize..(first_src + (middle.end - middle.start)) as usize;
            let dst_pages = middle.start as usize..middle.end as usize;
            for (d, s) in dst_entries[dst_pages].iter_mut().zip(&mut src_entries[src_pages]) {
                if let Some(frame) = s.frame_number() {
                    self.shares.share(frame);
                    *s = s.with_cow(true);
                    *d = *s;
                }
            }
            shared = Some(PageRange { start: first_src, end: first_src + (middle.end - middle.start) });
        }
        let mut result = Ok(());
        for page in all.filter(|p| !middle.contains(p)) {
            let (a, b) = ((page * PAGE).max(dst_offs), ((page + 1) * PAGE).min(dst_end));
            let s_at = a - dst_offs + src_offs;
            if let Err(n) =
                self.copy_bytes(&src_entries, &mut dst_entries[page as usize], dst_pool, s_at, a % PAGE, b - a)
            {
                result = Err(n);
                break;
            }
        }
        if let Some(s) = lookup(&mut self.slots, src) {
            s.entries = src_entries;
        }
        if let Some(d) = lookup(&mut self.slots, copy) {
            d.entries = dst_entries;
        }
        result.map(|()| shared)
    }

    /// Copies `len` bytes from source offset `s_at` into the destination page `entry` at
    /// `within`; the destination page is new (not shared). Skips source bytes that read as
    /// zeros because their pages were never touched.
    fn copy_bytes(
        &mut self,
        src_entries: &[Entry],
        entry: &mut Entry,
        dst_pool: PoolId,
        s_at: u64,
        within: u64,
        len: u64,
    ) -> Result<(), FrameCount> {
        if len == 0 {
            return Ok(());
        }
        let first = (s_at / PAGE) as usize;
        let last = ((s_at + len - 1) / PAGE) as usize;
        if src_entries[first..=last].iter().all(|e| e.frame().is_none()) {
            return Ok(());
        }
        if within == 0
            && len == PAGE
            && s_at.is_multiple_of(PAGE)
            && let Some(sf) = src_entries[first].frame()
        {
            // A whole page: copy it into a fresh frame (or the bound page) without zeroing.
            let dst = match entry.frame() {
                Some(f) => f,
                None => {
                    let f = allocate_frames(&self.pools, dst_pool, 1, Order::ZERO).map_err(|_| FrameCount::new(1))?;
                    *entry = Entry::new(f, dst_pool);
                    f
                }
            };
            self.memory.copy(sf, dst, FrameCount::new(1));
            return Ok(());
        }
        let (dst, _) = make_writable(&self.pools, &self.memory, &mut self.shares, dst_pool, entry)
            .map_err(|_| FrameCount::new(1))?;
        let mut buf = [0u8; PAGE_SIZE];
        let buf = &mut buf[..len as usize];
        let split = ((PAGE - s_at % PAGE).min(len)) as usize;
        for (part, at) in [(0..split, s_at), (split..len as usize, s_at + split as u64)] {
            if part.is_empty() {
                continue;
            }
            match src_entries[(at / PAGE) as usize].frame() {
                Some(f) => self.memory.read(PhysAddr::new(f.start_address().as_u64() + at % PAGE), &mut buf[part]),
                None => buf[part].fill(0),
            }
        }
        self.memory.write(PhysAddr::new(dst.start_address().as_u64() + within), buf);
        Ok(())
    }
}
