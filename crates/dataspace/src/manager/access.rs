//! The fault path and byte access: `map` and `map_run` for the region layer, `read`, `write`,
//! `clear`, `allocate` and `phys_addr`. The fault path allocates no heap memory.

use memkit_types::{Access, Frame, FrameCount, FrameSource, Order, PAGE_SIZE, PhysAddr, PhysMemory, Rights};

use super::{
    Kind, Manager, Mapping, PAGE, PageRange, RevokeKind, Revoker, allocate_frames, check_byte_range, lookup,
    lookup_open, make_writable, page_pieces, release_entries,
};
use crate::entry::Entry;
use crate::error::{MapError, PhysAddrError, RangeError};
use crate::ids::{ClientId, DataspaceId};

impl<S: FrameSource, M: PhysMemory> Manager<S, M> {
    /// The frame for `offset` of `ds`, for a page fault of kind `access`.
    ///
    /// The first touch of an anonymous page allocates a frame from the dataspace's pool and
    /// zeroes it. A write to a page shared copy-on-write copies it to a new frame from the
    /// dataspace's pool (the frame it replaced is reported in [`Mapping::replaced`]); a read
    /// of such a page returns the shared frame with read and execute rights only. Works on
    /// closed dataspaces that still have references. Allocates no heap memory.
    ///
    /// The rights returned never exceed the rights of the id: a fault through a read-only
    /// handle gets a read-only mapping, and a write fault through it is refused.
    ///
    /// # Errors
    /// [`MapError::InvalidId`], [`MapError::OffsetOutOfRange`] at or past the size,
    /// [`MapError::Forbidden`] when the id does not grant `access`,
    /// [`MapError::OutOfMemory`] when no frame is free (nothing changed).
    pub fn map(&mut self, ds: DataspaceId, offset: u64, access: Access) -> Result<Mapping, MapError> {
        let d = lookup(&mut self.slots, ds).ok_or(MapError::InvalidId(ds))?;
        if offset >= d.size {
            return Err(MapError::OffsetOutOfRange(offset, d.size));
        }
        let granted = ds.rights();
        if !granted.allows(access) {
            return Err(MapError::Forbidden(ds, access));
        }
        let pool = d.pool;
        let entry = &mut d.entries[(offset / PAGE) as usize];
        if let Some(frame) = entry.frame()
            && entry.is_cow()
            && access != Access::Write
        {
            if self.shares.is_shared(frame) {
                let rights = (Rights::READ | Rights::EXECUTE) & granted;
                return Ok(Mapping { frame, rights, replaced: None });
            }
            *entry = entry.with_cow(false);
        }
        let (frame, replaced) = make_writable(&self.pools, &self.memory, &mut self.shares, pool, entry)
            .map_err(|_| MapError::OutOfMemory(FrameCount::new(1)))?;
        Ok(Mapping { frame, rights: granted, replaced })
    }

    /// The 2 MiB block from `offset` of `ds` as one run that a pager may map with one large
    /// entry: the run's first frame and the rights of the id, when `offset` is 2 MiB
    /// aligned, the id allows `access`, every page of the block starts before the size, has
    /// a frame of its own (none shared copy-on-write) and the frames are consecutive from a
    /// 2 MiB-aligned first one: what [`map`](Manager::map) would give each page, without a
    /// change. Always so for a whole block of a superpage dataspace; for other dataspaces
    /// only where their frames happen to line up. `None` otherwise. Changes nothing and
    /// allocates nothing.
    pub fn large_run(&mut self, ds: DataspaceId, offset: u64, access: Access) -> Option<(Frame, Rights)> {
        const BLOCK: u64 = memkit_types::SUPERPAGE_SIZE as u64;
        let granted = ds.rights();
        let d = lookup(&mut self.slots, ds)?;
        if !granted.allows(access) || !offset.is_multiple_of(BLOCK) || offset.checked_add(BLOCK - PAGE)? >= d.size {
            return None;
        }
        let first = (offset / PAGE) as usize;
        let entries = d.entries.get(first..first + (BLOCK / PAGE) as usize)?;
        let base = entries[0].frame()?;
        if !base.number().is_multiple_of(BLOCK / PAGE) {
            return None;
        }
        let shares = &mut self.shares;
        let own = |(i, e): (usize, &Entry)| {
            e.frame().is_some_and(|f| f.number() == base.number() + i as u64 && !(e.is_cow() && shares.is_shared(f)))
        };
        entries.iter().enumerate().all(own).then_some((base, granted))
    }

    /// Gives the `count` pages from `offset` of `ds`, none of which has a frame yet, one run
    /// of `count` physically contiguous frames, zeroed in one call: what `count` calls of
    /// [`map`](Manager::map) would do, but with frames that a pager can map as one run
    /// (fault-around). Returns the run's first frame (page `offset + i × 4 KiB` gets frame
    /// `first + i`, the id's rights), or `None` when a page of the range already has a frame:
    /// nothing changed then, and the caller maps page by page. Allocates no heap memory.
    ///
    /// # Errors
    /// [`MapError::InvalidId`], [`MapError::OffsetOutOfRange`] when the range reaches past
    /// the size, [`MapError::Forbidden`] when the id does not grant reads,
    /// [`MapError::OutOfMemory`] when no run of `count` contiguous frames is free.
    /// Nothing changes on an error. A `count` of zero changes nothing and returns `None`.
    pub fn map_run(&mut self, ds: DataspaceId, offset: u64, count: u64) -> Result<Option<Frame>, MapError> {
        let d = lookup(&mut self.slots, ds).ok_or(MapError::InvalidId(ds))?;
        if !ds.rights().allows(Access::Read) {
            return Err(MapError::Forbidden(ds, Access::Read));
        }
        let first = offset / PAGE;
        let Some(last) = count.checked_sub(1).map(|n| first.saturating_add(n)) else { return Ok(None) };
        if last.saturating_mul(PAGE) >= d.size {
            return Err(MapError::OffsetOutOfRange(last.saturating_mul(PAGE), d.size));
        }
        let range = first as usize..=last as usize;
        if d.entries[range.clone()].iter().any(|e| e.frame().is_some()) {
            return Ok(None);
        }
        let pool = d.pool;
        let frame = allocate_frames(&self.pools, pool, count, Order::ZERO)
            .map_err(|_| MapError::OutOfMemory(FrameCount::new(count)))?;
        self.memory.zero(frame, FrameCount::new(count));
        for (i, entry) in d.entries[range].iter_mut().enumerate() {
            *entry = Entry::new(Frame::from_number(frame.number() + i as u64), pool);
        }
        Ok(Some(frame))
    }

    /// Reads `buf.len()` bytes from `offset` of `ds`; pages never touched read as zeros.
    /// Allocates nothing.
    ///
    /// # Errors
    /// [`RangeError::InvalidId`], [`RangeError::Forbidden`] without `READ`,
    /// [`RangeError::OutOfRange`].
    pub fn read(&mut self, ds: DataspaceId, offset: u64, buf: &mut [u8]) -> Result<(), RangeError> {
        let d = lookup(&mut self.slots, ds).ok_or(RangeError::InvalidId(ds))?;
        if !ds.rights().allows(Access::Read) {
            return Err(RangeError::Forbidden(ds, Access::Read));
        }
        check_byte_range(d.size, offset, buf.len())?;
        for (page, within, piece) in page_pieces(offset, buf.len()) {
            match d.entries[page as usize].frame() {
                Some(frame) => {
                    let addr = PhysAddr::new(frame.start_address().as_u64() + within);
                    self.memory.read(addr, &mut buf[piece]);
                }
                None => buf[piece].fill(0),
            }
        }
        Ok(())
    }

    /// Writes `buf` at `offset` of `ds`, as stores through a mapping would: allocating pages
    /// on first touch and breaking copy-on-write (revoking every mapping of a page whose
    /// frame is replaced).
    ///
    /// # Errors
    /// [`RangeError::InvalidId`], [`RangeError::Forbidden`] without `WRITE`,
    /// [`RangeError::OutOfRange`], [`RangeError::OutOfMemory`] (no byte is written; pages
    /// before the one that found no frame keep the private frames they were given, holding
    /// the bytes they showed before).
    pub fn write<R: Revoker + ?Sized>(
        &mut self,
        ds: DataspaceId,
        offset: u64,
        buf: &[u8],
        revoker: &mut R,
    ) -> Result<(), RangeError> {
        let d = lookup(&mut self.slots, ds).ok_or(RangeError::InvalidId(ds))?;
        if !ds.rights().allows(Access::Write) {
            return Err(RangeError::Forbidden(ds, Access::Write));
        }
        check_byte_range(d.size, offset, buf.len())?;
        // Every page gets a writable frame of its own before one byte is written, so that
        // running out of frames part-way changes no byte: a page made writable holds what it
        // showed before (zeros on a first touch, the shared bytes after a copy-on-write
        // break), and the write itself cannot fail.
        for (page, _, _) in page_pieces(offset, buf.len()) {
            self.writable_page(ds, page, revoker).map_err(RangeError::OutOfMemory)?;
        }
        for (page, within, piece) in page_pieces(offset, buf.len()) {
            let frame = self.writable_page(ds, page, revoker).map_err(RangeError::OutOfMemory)?;
            let addr = PhysAddr::new(frame.start_address().as_u64() + within);
            self.memory.write(addr, &buf[piece]);
        }
        Ok(())
    }

    /// Gives page `page` of `ds` a writable frame of its own, revoking the mappings of a
    /// frame it replaces.
    fn writable_page<R: Revoker + ?Sized>(
        &mut self,
        ds: DataspaceId,
        page: u64,
        revoker: &mut R,
    ) -> Result<Frame, FrameCount> {
        let Some(d) = lookup(&mut self.slots, ds) else { return Err(FrameCount::new(0)) };
        let pool = d.pool;
        let entry = &mut d.entries[page as usize];
        let (frame, replaced) =
            make_writable(&self.pools, &self.memory, &mut self.shares, pool, entry).map_err(|_| FrameCount::new(1))?;
        if replaced.is_some() {
            revoker.revoke(ds, PageRange { start: page, end: page + 1 }, RevokeKind::All);
        }
        Ok(frame)
    }

    pub(super) fn zero_bytes<R: Revoker + ?Sized>(
        &mut self,
        ds: DataspaceId,
        from: u64,
        to: u64,
        revoker: &mut R,
    ) -> Result<(), FrameCount> {
        const ZEROS: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
        let mut at = from;
        while at < to {
            let within = at % PAGE;
            let n = (PAGE - within).min(to - at);
            let present = lookup(&mut self.slots, ds).and_then(|d| d.entries[(at / PAGE) as usize].frame()).is_some();
            if present {
                let frame = self.writable_page(ds, at / PAGE, revoker)?;
                self.memory.write(PhysAddr::new(frame.start_address().as_u64() + within), &ZEROS[..n as usize]);
            }
            at += n;
        }
        Ok(())
    }

    fn check_owned_range(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        offset: u64,
        len: u64,
    ) -> Result<(Kind, u64), RangeError> {
        let d = lookup_open(&mut self.slots, ds).ok_or(RangeError::InvalidId(ds))?;
        if d.owner.task != caller.task {
            return Err(RangeError::PermissionDenied(ds, caller));
        }
        if !ds.rights().allows(Access::Write) {
            return Err(RangeError::Forbidden(ds, Access::Write));
        }
        let end = offset.checked_add(len).filter(|e| *e <= d.size).ok_or(RangeError::OutOfRange(offset, len))?;
        Ok((d.kind, end))
    }

    /// Zeroes `offset .. offset + len` of `ds`. Whole pages of an anonymous dataspace lose
    /// their frames (every mapping of them is revoked first) and read as zeros again; the
    /// partial pages at the edges, and every page of a bound dataspace, are zeroed in place.
    ///
    /// # Errors
    /// [`RangeError::InvalidId`], [`RangeError::PermissionDenied`] unless the caller's task
    /// owns `ds`, [`RangeError::Forbidden`] unless the id grants `WRITE`,
    /// [`RangeError::OutOfRange`], [`RangeError::OutOfMemory`] when an edge page is
    /// shared copy-on-write and no frame is left to unshare it.
    pub fn clear<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        offset: u64,
        len: u64,
        revoker: &mut R,
    ) -> Result<(), RangeError> {
        let (kind, end) = self.check_owned_range(caller, ds, offset, len)?;
        let first_full = offset.div_ceil(PAGE);
        let end_full = end / PAGE;
        // Unshare the partial edge pages first: after that nothing below can fail, so a
        // failure leaves the contents as they were.
        for (from, to) in [(offset, end.min(first_full * PAGE)), (end_full * PAGE, end)] {
            let page = from / PAGE;
            let present = lookup(&mut self.slots, ds).and_then(|d| d.entries.get(page as usize)?.frame()).is_some();
            if from < to && present {
                self.writable_page(ds, page, revoker).map_err(RangeError::OutOfMemory)?;
            }
        }
        if kind.is_bound() || first_full >= end_full {
            if kind.is_bound() && first_full < end_full {
                if let Some(d) = lookup(&mut self.slots, ds) {
                    for e in &d.entries[first_full as usize..end_full as usize] {
                        if let Some(f) = e.frame() {
                            self.memory.zero(f, FrameCount::new(1));
                        }
                    }
                }
                self.zero_bytes(ds, offset, first_full * PAGE, revoker).map_err(RangeError::OutOfMemory)?;
                self.zero_bytes(ds, end_full * PAGE, end, revoker).map_err(RangeError::OutOfMemory)?;
            } else {
                self.zero_bytes(ds, offset, end, revoker).map_err(RangeError::OutOfMemory)?;
            }
            return Ok(());
        }
        self.zero_bytes(ds, offset, first_full * PAGE, revoker).map_err(RangeError::OutOfMemory)?;
        self.zero_bytes(ds, end_full * PAGE, end, revoker).map_err(RangeError::OutOfMemory)?;
        revoker.revoke(ds, PageRange { start: first_full, end: end_full }, RevokeKind::All);
        if let Some(d) = lookup(&mut self.slots, ds) {
            let range = &mut d.entries[first_full as usize..end_full as usize];
            release_entries(&self.pools, &mut self.shares, range, false);
            range.fill(Entry::EMPTY);
        }
        Ok(())
    }

    /// Populates `offset .. offset + len` of `ds`: every page in it gets a frame of its own
    /// (allocated and zeroed, or copied out of a copy-on-write share, revoking the mappings of
    /// the frame it replaces), so that [`phys_addr`](Manager::phys_addr) can report it.
    ///
    /// # Errors
    /// [`RangeError::InvalidId`], [`RangeError::PermissionDenied`], [`RangeError::Forbidden`]
    /// unless the id grants `WRITE`, [`RangeError::OutOfRange`], [`RangeError::OutOfMemory`]
    /// (pages before the failing one stay populated).
    pub fn allocate<R: Revoker + ?Sized>(
        &mut self,
        caller: ClientId,
        ds: DataspaceId,
        offset: u64,
        len: u64,
        revoker: &mut R,
    ) -> Result<(), RangeError> {
        let (_, end) = self.check_owned_range(caller, ds, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        for page in offset / PAGE..end.div_ceil(PAGE) {
            self.writable_page(ds, page, revoker).map_err(RangeError::OutOfMemory)?;
        }
        Ok(())
    }

    /// The physical address of `offset` in `ds` and the number of bytes from there that are
    /// physically contiguous (up to the dataspace's size), for DMA.
    ///
    /// # Errors
    /// [`PhysAddrError::InvalidId`], [`PhysAddrError::OffsetOutOfRange`],
    /// [`PhysAddrError::NotResident`] for a page without a frame of its own (populate it
    /// with [`allocate`](Manager::allocate)), [`PhysAddrError::Forbidden`] unless the id
    /// grants read and write (a device may do both at the address).
    pub fn phys_addr(&mut self, ds: DataspaceId, offset: u64) -> Result<(PhysAddr, u64), PhysAddrError> {
        let d = lookup(&mut self.slots, ds).ok_or(PhysAddrError::InvalidId(ds))?;
        if !ds.rights().contains(Rights::RW) {
            return Err(PhysAddrError::Forbidden(ds));
        }
        if offset >= d.size {
            return Err(PhysAddrError::OffsetOutOfRange(offset, d.size));
        }
        let size = d.size;
        let shares = &mut self.shares;
        let mut own = |e: Entry| e.frame().filter(|f| !(e.is_cow() && shares.is_shared(*f)));
        let page = (offset / PAGE) as usize;
        let frame = own(d.entries[page]).ok_or(PhysAddrError::NotResident(offset))?;
        let mut end = (page as u64 + 1) * PAGE;
        for (next, e) in (frame.number() + 1..).zip(&d.entries[page + 1..]) {
            if end >= size || own(*e).is_none_or(|f| f.number() != next) {
                break;
            }
            end += PAGE;
        }
        let addr = PhysAddr::new(frame.start_address().as_u64() + offset % PAGE);
        Ok((addr, end.min(size) - offset))
    }
}
