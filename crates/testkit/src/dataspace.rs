//! The dataspace manager (`memkit-dataspace`) under random actions: an [`Action`] enum, a
//! reference model in which every dataspace is a `Vec<u8>`, and a [`World`] that applies each
//! action to a real [`Manager`] and to the model and compares them.
//!
//! The property test, the random-action driver and the fuzz target all drive a [`World`];
//! the scenario tests start from [`fixture`] (a manager over model pools, a recording
//! revoker).
//!
//! ```text
//!   Action ──▶ World::apply ──┬─▶ Manager<ModelFrameSource, SparseRam>   (the code under test)
//!                             └─▶ model: [Option<Vec<u8>>; SLOTS]         (the reference)
//!              then: results agree, contents agree byte for byte (whole pages: zeros
//!                    past each dataspace's size, in reads and in mapped frames), check_invariants(),
//!                    frames held == frames the pools gave out, quota == model charges
//! ```
//!
//! The model predicts every error except running out of frames (the pools are small and an
//! action may arm fault injection): when the manager reports `-L4_ENOMEM` for memory, the
//! model checks that the pools were indeed short or a failure was injected, and that nothing
//! changed.

use memkit_dataspace::{
    ClientId, CopyLength, CopyRequest, CreateError, DataspaceId, DmFlags, FactoryId, Kind, Manager, MemphysCopyRequest,
    MemphysOpenRequest, NoRevoker, PoolId, RangeError,
};
use memkit_types::{Access, Frame, FrameCount, FrameSource, PAGE_SIZE, PhysMemory, Rights};

use crate::{ModelFrameSource, SparseRam};

pub mod fixture;

/// How many dataspace slots the actions name.
pub const SLOTS: usize = 8;
/// The largest dataspace the actions create: 8 pages.
pub const MAX_BYTES: usize = 8 * PAGE_SIZE;
/// The quota of the factory the actions use, in pages.
pub const QUOTA_PAGES: u64 = 48;
const POOL0: (u64, u64) = (0x1000, 64);
const POOL7: (u64, u64) = (0x100, 16);

/// One step of the random-action driver, the property test and the fuzz target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum Action {
    /// Creates a dataspace in an empty slot; `kind` 0–1 anonymous, 2 contiguous, 3 pinned.
    Create {
        /// Slot (modulo [`SLOTS`]).
        slot: u8,
        /// Size in bytes (modulo [`MAX_BYTES`] + 1; 0 must fail).
        size: u16,
        /// Backing kind.
        kind: u8,
        /// Pool 7 instead of pool 0.
        pool7: bool,
    },
    /// Writes `len` bytes of `byte` at `offset`.
    Write {
        /// Slot.
        slot: u8,
        /// Byte offset (may be out of range).
        offset: u16,
        /// Length.
        len: u16,
        /// The value written.
        byte: u8,
    },
    /// Reads and compares `len` bytes at `offset`.
    Read {
        /// Slot.
        slot: u8,
        /// Byte offset.
        offset: u16,
        /// Length.
        len: u16,
    },
    /// A page fault at `offset`.
    Map {
        /// Slot.
        slot: u8,
        /// Byte offset.
        offset: u16,
        /// A write fault.
        write: bool,
    },
    /// `copy_long` (or `memphys_copy` into pool 7) into an empty slot.
    Copy {
        /// Source slot.
        src: u8,
        /// Destination slot.
        dst: u8,
        /// Source offset.
        src_offs: u16,
        /// Destination offset.
        dst_offs: u16,
        /// Length (`u16::MAX`: the whole dataspace).
        len: u16,
        /// Copy-on-write.
        cow: bool,
        /// Into pool 7.
        pool7: bool,
        /// Move the destination offset to the source offset's page phase (so that pages can
        /// be shared).
        same_phase: bool,
    },
    /// Resizes (0 closes).
    Resize {
        /// Slot.
        slot: u8,
        /// New size (modulo [`MAX_BYTES`] + 1).
        size: u16,
        /// Asked by a client that is not the owner.
        foreign: bool,
    },
    /// Closes.
    Close {
        /// Slot.
        slot: u8,
        /// Asked by a client that is not the owner.
        foreign: bool,
    },
    /// Zeroes a range.
    Clear {
        /// Slot.
        slot: u8,
        /// Byte offset.
        offset: u16,
        /// Length.
        len: u16,
    },
    /// Populates a range.
    Populate {
        /// Slot.
        slot: u8,
        /// Byte offset.
        offset: u16,
        /// Length.
        len: u16,
    },
    /// Takes a reference (an attachment).
    Attach {
        /// Slot.
        slot: u8,
    },
    /// Drops a reference.
    Detach {
        /// Slot.
        slot: u8,
    },
    /// Uses the last id freed in a slot: every operation must say `InvalidId`.
    Stale {
        /// Slot.
        slot: u8,
    },
    /// Makes the `k`-th frame allocation from now on fail (modulo 8).
    FailAllocation {
        /// Which allocation.
        k: u8,
    },
}

/// A copy in the harness's units, as an [`Action::Copy`] gives it (slots already reduced).
#[derive(Debug, Clone, Copy)]
struct CopyCase {
    /// Source slot.
    src: usize,
    /// Destination slot.
    dst: usize,
    /// Source offset.
    src_offs: u16,
    /// Destination offset.
    dst_offs: u16,
    /// Length (`u16::MAX`: the whole dataspace).
    len: u16,
    /// Copy-on-write.
    cow: bool,
    /// Into pool 7 (`memphys_copy`) rather than the source's pool.
    pool7: bool,
}

#[derive(Debug)]
struct ModelDs {
    id: DataspaceId,
    data: Vec<u8>,
    open: bool,
    refs: u32,
}

/// A manager over small model pools, the reference model beside it, and the checks.
#[derive(Debug)]
pub struct World {
    /// The manager under test.
    pub manager: Manager<ModelFrameSource, SparseRam>,
    factory: FactoryId,
    model: Vec<Option<ModelDs>>,
    stale: Vec<Option<DataspaceId>>,
    injected: bool,
    armed: bool,
    lenient: bool,
    /// Actions applied so far.
    pub steps: u64,
    /// Operations that succeeded (creates, writes, copies, ...): a driver checks that its
    /// actions did something.
    pub successes: u64,
}

const OWNER: ClientId = ClientId::new(1, 1);
const STRANGER: ClientId = ClientId::new(2, 1);

fn pages(bytes: usize) -> u64 {
    bytes.div_ceil(PAGE_SIZE) as u64
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// A manager with pool 0 (64 frames) and pool 7 (16 frames below 16 MiB), and a factory
    /// of [`QUOTA_PAGES`] pages.
    #[must_use]
    pub fn new() -> Self {
        let mut manager = Manager::new(memkit_dataspace::Config::new(1 << 30), SparseRam::new());
        manager.set_pool(PoolId::DEFAULT, ModelFrameSource::new(Frame::from_number(POOL0.0), FrameCount::new(POOL0.1)));
        manager.set_pool(PoolId::ISA_DMA, ModelFrameSource::new(Frame::from_number(POOL7.0), FrameCount::new(POOL7.1)));
        let factory = manager.create_factory(FactoryId::ROOT, QUOTA_PAGES * PAGE_SIZE as u64).expect("root has room");
        World {
            manager,
            factory,
            model: (0..SLOTS).map(|_| None).collect(),
            stale: vec![None; SLOTS],
            injected: false,
            armed: false,
            lenient: false,
            steps: 0,
            successes: 0,
        }
    }

    fn charged_pages(&self) -> u64 {
        self.model.iter().flatten().map(|d| pages(d.data.len())).sum()
    }

    fn room_pages(&self) -> u64 {
        QUOTA_PAGES - self.charged_pages()
    }

    fn any_memory_short(&self) -> bool {
        let short = |pool| self.manager.pool(pool).is_some_and(|p: &ModelFrameSource| p.free_frames().get() < 16);
        self.lenient || self.injected || short(PoolId::DEFAULT) || short(PoolId::ISA_DMA)
    }

    fn forget(&mut self, slot: usize) {
        if let Some(d) = self.model[slot].take() {
            self.stale[slot] = Some(d.id);
        }
    }

    /// Makes the `k`-th frame allocation of pool 0 from now on fail, and accepts running out
    /// of memory from then on.
    pub fn fail_allocation_at(&mut self, k: u64) {
        if let Some(p) = self.manager.pool(PoolId::DEFAULT) {
            p.fail_allocation(Some(k));
        }
        self.lenient = true;
    }

    /// Applies `action` to the manager and the model, then checks everything.
    ///
    /// # Panics
    /// When the manager and the model disagree, or an invariant breaks.
    pub fn apply(&mut self, action: &Action) {
        self.steps += 1;
        self.injected = core::mem::take(&mut self.armed);
        match *action {
            Action::Create { slot, size, kind, pool7 } => self.create(slot as usize % SLOTS, size, kind, pool7),
            Action::Write { slot, offset, len, byte } => self.write(slot as usize % SLOTS, offset, len, byte),
            Action::Read { slot, offset, len } => self.read(slot as usize % SLOTS, offset as u64, len as usize),
            Action::Map { slot, offset, write } => self.map(slot as usize % SLOTS, offset as u64, write),
            Action::Copy { src, dst, src_offs, dst_offs, len, cow, pool7, same_phase } => {
                let page = PAGE_SIZE as u16;
                let dst_offs = if same_phase { dst_offs - dst_offs % page + src_offs % page } else { dst_offs };
                let (src, dst) = (src as usize % SLOTS, dst as usize % SLOTS);
                self.copy(CopyCase { src, dst, src_offs, dst_offs, len, cow, pool7 });
            }
            Action::Resize { slot, size, foreign } => self.resize(slot as usize % SLOTS, size, foreign),
            Action::Close { slot, foreign } => self.close(slot as usize % SLOTS, foreign),
            Action::Clear { slot, offset, len } => self.clear(slot as usize % SLOTS, offset as u64, len as u64),
            Action::Populate { slot, offset, len } => {
                self.populate(slot as usize % SLOTS, offset as u64, len as u64);
            }
            Action::Attach { slot } => self.attach(slot as usize % SLOTS),
            Action::Detach { slot } => self.detach(slot as usize % SLOTS),
            Action::Stale { slot } => self.stale(slot as usize % SLOTS),
            Action::FailAllocation { k } => {
                let k = u64::from(k % 8);
                for pool in [PoolId::DEFAULT, PoolId::ISA_DMA] {
                    if let Some(p) = self.manager.pool(pool) {
                        p.fail_allocation(Some(k));
                    }
                }
                self.armed = true;
            }
        }
        if self.injected {
            for pool in [PoolId::DEFAULT, PoolId::ISA_DMA] {
                if let Some(p) = self.manager.pool(pool) {
                    p.fail_allocation(None);
                }
            }
            self.injected = false;
        }
        self.check();
    }

    fn create(&mut self, slot: usize, size: u16, kind: u8, pool7: bool) {
        if self.model[slot].is_some() {
            return;
        }
        let size = size as usize % (MAX_BYTES + 1);
        let flags = match kind % 4 {
            2 => DmFlags::CONTIGUOUS,
            3 => DmFlags::PINNED,
            _ => DmFlags::empty(),
        };
        let pool = if pool7 { 7 } else { 0 };
        let r = self.manager.memphys_open(
            self.factory,
            OWNER,
            MemphysOpenRequest::new(pool, size as u64).flags(flags).name("m"),
        );
        match r {
            Ok(id) => {
                self.successes += 1;
                assert!(size > 0 && pages(size) <= self.room_pages(), "create of {size} bytes should fail");
                self.model[slot] = Some(ModelDs { id, data: vec![0; size], open: true, refs: 0 });
            }
            Err(CreateError::SizeNotSupported(_)) => assert_eq!(size, 0),
            Err(CreateError::QuotaExceeded(..)) => assert!(pages(size) > self.room_pages()),
            Err(CreateError::OutOfMemory(_)) => {
                // A contiguous run may not exist in a fragmented pool; pinned pages need only
                // enough free frames.
                let pool = if pool7 { PoolId::ISA_DMA } else { PoolId::DEFAULT };
                let free = self.manager.pool(pool).map_or(0, |p| p.free_frames().get());
                let plausible = flags == DmFlags::CONTIGUOUS || self.any_memory_short() || free < pages(size);
                assert!(plausible, "unexpected {r:?}");
            }
            Err(e) => panic!("create: {e}"),
        }
    }

    fn range(&self, slot: usize, offset: u64, len: u64) -> Option<(DataspaceId, bool)> {
        let d = self.model[slot].as_ref()?;
        Some((d.id, offset.checked_add(len).is_some_and(|e| e <= d.data.len() as u64)))
    }

    fn write(&mut self, slot: usize, offset: u16, len: u16, byte: u8) {
        let (offset, len) = (offset as u64, len as u64 % (3 * PAGE_SIZE as u64));
        let Some((id, inside)) = self.range(slot, offset, len) else { return };
        let ro = id.narrowed(Rights::READ | Rights::EXECUTE);
        let r = self.manager.write(ro, offset, &vec![byte; len as usize], &mut NoRevoker);
        assert_eq!(r, Err(RangeError::Forbidden(ro, Access::Write)), "a write through a read-only handle");
        if !inside {
            let r = self.manager.write(id, offset, &vec![byte; len as usize], &mut NoRevoker);
            assert_eq!(r, Err(RangeError::OutOfRange(offset, len)));
            return;
        }
        // Page by page, so that a failure leaves a state the model can follow.
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let n = (PAGE_SIZE as u64 - at % PAGE_SIZE as u64).min(end - at);
            match self.manager.write(id, at, &vec![byte; n as usize], &mut NoRevoker) {
                Ok(()) => {
                    self.successes += 1;
                    self.successes += 1;
                    if let Some(d) = self.model[slot].as_mut() {
                        d.data[at as usize..(at + n) as usize].fill(byte);
                    }
                }
                Err(RangeError::OutOfMemory(_)) => {
                    assert!(self.any_memory_short(), "write ran out of memory unexpectedly");
                    return;
                }
                Err(e) => panic!("write: {e}"),
            }
            at += n;
        }
    }

    fn read(&mut self, slot: usize, offset: u64, len: usize) {
        let len = len % (3 * PAGE_SIZE);
        let Some((id, inside)) = self.range(slot, offset, len as u64) else { return };
        let mut buf = vec![0xa5; len];
        // Through a read-only handle when the offset is odd: the same bytes.
        let handle = if offset % 2 == 1 { id.narrowed(Rights::READ) } else { id };
        let r = self.manager.read(handle, offset, &mut buf);
        if !inside {
            assert_eq!(r, Err(RangeError::OutOfRange(offset, len as u64)));
            return;
        }
        assert_eq!(r, Ok(()));
        let d = self.model[slot].as_ref().expect("slot checked");
        assert!(buf == d.data[offset as usize..offset as usize + len], "read differs at slot {slot}");
    }

    fn map(&mut self, slot: usize, offset: u64, write: bool) {
        let Some(d) = self.model[slot].as_ref() else { return };
        let (id, size) = (d.id, d.data.len() as u64);
        let access = if write { Access::Write } else { Access::Read };
        // A read-only handle of the same dataspace: a write fault through it is refused and
        // changes nothing (checked with everything else after the action).
        let ro = id.narrowed(Rights::READ);
        if write {
            let r = self.manager.map(ro, offset, access);
            let expect = if offset < size {
                memkit_dataspace::MapError::Forbidden(ro, access)
            } else {
                memkit_dataspace::MapError::OffsetOutOfRange(offset, size)
            };
            assert_eq!(r, Err(expect), "a write fault through a read-only handle");
        }
        match self.manager.map(id, offset, access) {
            Ok(m) => {
                self.successes += 1;
                assert!(offset < size);
                assert!(m.rights.contains(Rights::READ));
                assert_eq!(write, write && m.rights.contains(Rights::WRITE), "a write map must allow writes");
                // The whole page, as a mapping shows it: zeros past the size.
                let page = offset / PAGE_SIZE as u64 * PAGE_SIZE as u64;
                let n = (size - page).min(PAGE_SIZE as u64) as usize;
                let mut buf = vec![0; PAGE_SIZE];
                self.manager.memory().read(m.frame.start_address(), &mut buf);
                let d = self.model[slot].as_ref().expect("slot checked");
                assert!(buf[..n] == d.data[page as usize..page as usize + n], "mapped frame differs at slot {slot}");
                assert!(buf[n..].iter().all(|&b| b == 0), "mapped frame of slot {slot} shows bytes past the size");
            }
            Err(memkit_dataspace::MapError::OffsetOutOfRange(o, s)) => {
                assert!(o == offset && s == size && offset >= size)
            }
            Err(memkit_dataspace::MapError::OutOfMemory(_)) => assert!(self.any_memory_short()),
            Err(e) => panic!("map: {e}"),
        }
    }

    fn copy(&mut self, case: CopyCase) {
        let CopyCase { src, dst, src_offs, dst_offs, len, cow, pool7 } = case;
        if self.model[dst].is_some() {
            return;
        }
        let Some(s) = self.model[src].as_ref() else { return };
        let (src_offs, dst_offs) = (src_offs as u64 % (MAX_BYTES as u64 + 2), dst_offs as u64 % MAX_BYTES as u64);
        let size = s.data.len() as u64;
        let length = if len == u16::MAX { CopyLength::WholeDataspace } else { CopyLength::Bytes(len as u64) };
        let flags = if cow { DmFlags::COW } else { DmFlags::empty() };
        let r = if pool7 {
            self.manager.memphys_copy(
                OWNER,
                s.id,
                MemphysCopyRequest::new(src_offs, dst_offs, length, 7).flags(flags).name("c"),
                &mut NoRevoker,
            )
        } else {
            self.manager.copy_long(
                OWNER,
                s.id,
                CopyRequest::new(src_offs, dst_offs, length).flags(flags).name("c"),
                &mut NoRevoker,
            )
        };
        let num = match length {
            CopyLength::WholeDataspace => size.checked_sub(src_offs),
            CopyLength::Bytes(n) => Some(n).filter(|n| src_offs + n <= size),
        };
        let open = s.open;
        match (r, num) {
            (Ok(id), Some(num)) => {
                self.successes += 1;
                assert!(open);
                let total = dst_offs + num;
                assert!(total > 0 && total <= memkit_dataspace::MAX_SIZE && pages(total as usize) <= self.room_pages());
                let mut data = vec![0; total as usize];
                let s = self.model[src].as_ref().expect("slot checked");
                data[dst_offs as usize..].copy_from_slice(&s.data[src_offs as usize..(src_offs + num) as usize]);
                self.model[dst] = Some(ModelDs { id, data, open: true, refs: 0 });
            }
            (Err(memkit_dataspace::CopyError::InvalidId(_)), _) => assert!(!open),
            (Err(memkit_dataspace::CopyError::SourceOutOfRange(..)), None) => assert!(open),
            (Err(memkit_dataspace::CopyError::Create(CreateError::SizeNotSupported(0))), Some(num)) => {
                assert!(open && dst_offs + num == 0);
            }
            (Err(memkit_dataspace::CopyError::Create(CreateError::QuotaExceeded(..))), Some(num)) => {
                assert!(open && pages((dst_offs + num) as usize) > self.room_pages());
            }
            (Err(memkit_dataspace::CopyError::Create(CreateError::OutOfMemory(_))), Some(_)) => {
                assert!(open && self.any_memory_short());
            }
            (r, num) => panic!("copy: {r:?} with length {num:?}"),
        }
    }

    fn resize(&mut self, slot: usize, size: u16, foreign: bool) {
        let Some(d) = self.model[slot].as_ref() else { return };
        let size = size as usize % (MAX_BYTES + 1);
        let caller = if foreign { STRANGER } else { OWNER };
        let (id, open, old) = (d.id, d.open, d.data.len());
        let r = self.manager.resize(caller, id, size as u64, &mut NoRevoker);
        match r {
            Ok(()) => {
                self.successes += 1;
                assert!(open && !foreign);
                if size == 0 {
                    self.close_model(slot);
                } else {
                    assert!(pages(size) <= pages(old) || pages(size) - pages(old) <= self.room_pages());
                    if let Some(d) = self.model[slot].as_mut() {
                        d.data.resize(size, 0);
                    }
                }
            }
            Err(memkit_dataspace::ResizeError::InvalidId(_)) => assert!(!open),
            Err(memkit_dataspace::ResizeError::PermissionDenied(..)) => assert!(open && foreign),
            Err(memkit_dataspace::ResizeError::QuotaExceeded(..)) => {
                assert!(open && !foreign && pages(size) - pages(old) > self.room_pages());
            }
            Err(memkit_dataspace::ResizeError::CannotGrowInPlace(_)) => assert!(open && !foreign && size > old),
            // A shrink needs a frame when its new last page is shared copy-on-write: that
            // page gets a frame of its own to be zeroed past the new size.
            Err(memkit_dataspace::ResizeError::OutOfMemory(_)) => {
                assert!(open && !foreign && (size > old || self.any_memory_short()));
            }
            Err(e) => panic!("resize: {e}"),
        }
    }

    fn close_model(&mut self, slot: usize) {
        let Some(d) = self.model[slot].as_mut() else { return };
        d.open = false;
        if d.refs == 0 {
            self.forget(slot);
        }
    }

    fn close(&mut self, slot: usize, foreign: bool) {
        let Some(d) = self.model[slot].as_ref() else { return };
        let caller = if foreign { STRANGER } else { OWNER };
        let (id, open) = (d.id, d.open);
        match self.manager.close(caller, id) {
            Ok(()) => {
                self.successes += 1;
                assert!(open && !foreign);
                self.close_model(slot);
            }
            Err(memkit_dataspace::CloseError::InvalidId(_)) => assert!(!open),
            Err(memkit_dataspace::CloseError::PermissionDenied(..)) => assert!(open && foreign),
            Err(e) => panic!("close: an error the model does not know: {e:?}"),
        }
    }

    fn clear(&mut self, slot: usize, offset: u64, len: u64) {
        let Some(d) = self.model[slot].as_ref() else { return };
        let (id, open, size) = (d.id, d.open, d.data.len() as u64);
        match self.manager.clear(OWNER, id, offset, len, &mut NoRevoker) {
            Ok(()) => {
                self.successes += 1;
                assert!(open && offset + len <= size);
                if let Some(d) = self.model[slot].as_mut() {
                    d.data[offset as usize..(offset + len) as usize].fill(0);
                }
            }
            Err(RangeError::InvalidId(_)) => assert!(!open),
            Err(RangeError::OutOfRange(..)) => assert!(open && offset + len > size),
            Err(RangeError::OutOfMemory(_)) => assert!(self.any_memory_short()),
            Err(e) => panic!("clear: {e}"),
        }
    }

    fn populate(&mut self, slot: usize, offset: u64, len: u64) {
        let Some(d) = self.model[slot].as_ref() else { return };
        let (id, open, size) = (d.id, d.open, d.data.len() as u64);
        match self.manager.allocate(OWNER, id, offset, len, &mut NoRevoker) {
            Ok(()) => {
                self.successes += 1;
                assert!(open && offset + len <= size);
                if len > 0 {
                    let (addr, contiguous) = self.manager.phys_addr(id, offset).expect("populated");
                    assert!(contiguous >= 1 && contiguous <= size - offset);
                    let mut b = [0u8; 1];
                    self.manager.memory().read(addr, &mut b);
                    let d = self.model[slot].as_ref().expect("slot checked");
                    assert_eq!(b[0], d.data[offset as usize], "phys_addr byte");
                }
            }
            Err(RangeError::InvalidId(_)) => assert!(!open),
            Err(RangeError::OutOfRange(..)) => assert!(open && offset + len > size),
            Err(RangeError::OutOfMemory(_)) => assert!(self.any_memory_short()),
            Err(e) => panic!("allocate: {e}"),
        }
    }

    fn attach(&mut self, slot: usize) {
        let Some(d) = self.model[slot].as_mut() else { return };
        match self.manager.inc_ref(d.id) {
            Ok(()) => {
                self.successes += 1;
                assert!(d.open);
                d.refs += 1;
            }
            Err(memkit_dataspace::RefError::InvalidId(_)) => assert!(!d.open),
            Err(e) => panic!("inc_ref: {e}"),
        }
    }

    fn detach(&mut self, slot: usize) {
        let Some(d) = self.model[slot].as_mut() else { return };
        match self.manager.dec_ref(d.id) {
            Ok(()) => {
                self.successes += 1;
                assert!(d.refs > 0);
                d.refs -= 1;
                if d.refs == 0 && !d.open {
                    self.forget(slot);
                }
            }
            Err(memkit_dataspace::RefError::CountOutOfRange(_, 0)) => assert_eq!(d.refs, 0),
            Err(e) => panic!("dec_ref: {e}"),
        }
    }

    fn stale(&mut self, slot: usize) {
        let Some(id) = self.stale[slot] else { return };
        assert_eq!(self.manager.info(id), Err(memkit_dataspace::InfoError::InvalidId(id)));
        assert_eq!(self.manager.close(OWNER, id), Err(memkit_dataspace::CloseError::InvalidId(id)));
        assert_eq!(self.manager.map(id, 0, Access::Read), Err(memkit_dataspace::MapError::InvalidId(id)));
        assert_eq!(self.manager.inc_ref(id), Err(memkit_dataspace::RefError::InvalidId(id)));
        assert_eq!(self.manager.dec_ref(id), Err(memkit_dataspace::RefError::InvalidId(id)));
        let r = self.manager.copy(OWNER, id, DmFlags::COW, "", &mut NoRevoker);
        assert_eq!(r, Err(memkit_dataspace::CopyError::InvalidId(id)));
    }

    /// Checks the invariants, the frame and quota accounting, and (every `FULL_EVERY` steps,
    /// or always with `full`) every byte of every dataspace.
    ///
    /// # Panics
    /// On any disagreement.
    pub fn check(&mut self) {
        self.manager.check_invariants();
        for pool in [PoolId::DEFAULT, PoolId::ISA_DMA] {
            let p = self.manager.pool(pool).expect("both pools exist");
            let out = p.total_frames().get() - p.free_frames().get();
            assert_eq!(self.manager.frames_held(pool), out, "pool {pool}: frames held vs frames given out");
        }
        let quota = self.manager.quota(self.factory).expect("factory exists");
        assert_eq!(quota.used, self.charged_pages() * PAGE_SIZE as u64, "quota usage");
        let open = self.model.iter().flatten().filter(|d| d.open).count() as u32;
        assert_eq!(self.manager.live(), open, "live dataspaces");
        if self.steps.is_multiple_of(64) {
            self.compare_all();
        }
    }

    /// Compares every byte of every dataspace with the model and walks the `info` chain.
    ///
    /// # Panics
    /// On any difference.
    pub fn compare_all(&mut self) {
        for slot in 0..SLOTS {
            let Some(d) = self.model[slot].as_ref() else { continue };
            let mut buf = vec![0; d.data.len()];
            let id = d.id;
            self.manager.read(id, 0, &mut buf).expect("readable while alive");
            let d = self.model[slot].as_ref().expect("slot checked");
            assert!(buf == d.data, "slot {slot} differs");
            // Every backing frame, whole: the model's bytes, then zeros past the size.
            let frames = self.manager.backing_frames(id).expect("alive");
            assert_eq!(frames.len() as u64, pages(d.data.len()), "slot {slot}: backing pages");
            let mut page = vec![0; PAGE_SIZE];
            for (i, frame) in frames.iter().enumerate() {
                let Some(frame) = frame else { continue };
                self.manager.memory().read(frame.start_address(), &mut page);
                let at = i * PAGE_SIZE;
                let n = (d.data.len() - at).min(PAGE_SIZE);
                assert!(page[..n] == d.data[at..at + n], "slot {slot}: frame of page {i} differs");
                assert!(page[n..].iter().all(|&b| b == 0), "slot {slot}: page {i} holds bytes past the size");
            }
            if d.open {
                let info = self.manager.info(id).expect("open");
                assert_eq!(info.size, d.data.len() as u64);
                assert_eq!(info.owner, OWNER);
                assert!(info.kind.is_empty() || info.kind.intersects(Kind::CONTIGUOUS | Kind::PINNED));
            }
        }
        let mut seen = 0;
        let mut next = self.manager.first_id();
        while let Some(id) = next {
            seen += 1;
            next = self.manager.info(id).expect("iteration visits live ids").next_id;
        }
        assert_eq!(seen, self.manager.live());
    }

    /// Closes everything and drops every reference, then checks that every frame and every
    /// byte of quota came back.
    ///
    /// # Panics
    /// When something leaked.
    pub fn teardown(&mut self) {
        self.compare_all();
        let closed = self.manager.close_all(OWNER, OWNER, DmFlags::SAME_TASK).expect("own task");
        assert_eq!(closed, self.model.iter().flatten().filter(|d| d.open).count() as u32);
        for slot in 0..SLOTS {
            if let Some(d) = self.model[slot].as_ref() {
                if d.refs > 0 {
                    self.manager.dec_refcnt(d.id, d.refs).expect("references held");
                }
                self.model[slot] = None;
            }
        }
        self.check();
        for pool in [PoolId::DEFAULT, PoolId::ISA_DMA] {
            let p = self.manager.pool(pool).expect("both pools exist");
            assert_eq!(p.free_frames(), p.total_frames(), "pool {pool} leaked frames");
        }
        assert_eq!(self.manager.quota(self.factory).map(|q| q.used), Some(0));
    }
}
