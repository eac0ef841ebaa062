//! A simple backing store for tests, benchmarks and fuzzing: dataspaces whose pages get a
//! fresh frame number on first touch.
//!
//! Frame numbers are never reused, so a fresh page reads as zeros through a RAM model such
//! as `memkit_testkit::SparseRam`; a release (`DETACH_FREE`) is only counted. The
//! page table of each
//! dataspace is allocated when the dataspace is created, so [`Backing::map`] allocates no
//! heap memory.

use alloc::vec;
use alloc::vec::Vec;

use memkit_types::{Access, Frame, PAGE_SIZE, Rights};

use crate::backing::{Attachment, Backing, BackingError};

/// A dataspace of a [`MockBacking`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MockId(pub u32);

#[derive(Debug, Clone)]
struct MockDataspace {
    rights: Rights,
    pages: Vec<Option<Frame>>,
    attachments: usize,
    released: u64,
}

/// Dataspaces with lazily assigned frames and attachment counting.
#[derive(Debug, Clone)]
pub struct MockBacking {
    spaces: Vec<Option<MockDataspace>>,
    next_frame: u64,
    fail_after: Option<u64>,
    sizes: bool,
}

impl MockBacking {
    /// A store whose first frame is `first`.
    #[must_use]
    pub fn new(first: Frame) -> Self {
        MockBacking { spaces: Vec::new(), next_frame: first.number(), fail_after: None, sizes: false }
    }

    /// A dataspace of `pages` pages whose handle allows `rights`.
    pub fn create(&mut self, pages: usize, rights: Rights) -> MockId {
        let id = MockId(u32::try_from(self.spaces.len()).expect("fewer than 2^32 dataspaces"));
        self.spaces.push(Some(MockDataspace { rights, pages: vec![None; pages], attachments: 0, released: 0 }));
        id
    }

    /// Whether [`Backing::size`] tells the dataspaces' sizes, so that the region map refuses
    /// an attachment past a dataspace's end. Off by default: the seed's `attach` accepts
    /// one, and its fault returns `-L4_ERANGE` past the end.
    pub fn tell_sizes(&mut self, on: bool) {
        self.sizes = on;
    }

    /// Forgets the dataspace: its handle names nothing any more.
    pub fn remove(&mut self, id: MockId) {
        if let Some(s) = self.spaces.get_mut(id.0 as usize) {
            *s = None;
        }
    }

    /// After `n` more successful page allocations, every allocation fails with
    /// [`BackingError::OutOfMemory`] (`None`: never).
    pub fn fail_after(&mut self, n: Option<u64>) {
        self.fail_after = n;
    }

    fn space(&self, id: MockId) -> Option<&MockDataspace> {
        self.spaces.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// The number of attachments referring to `id`.
    #[must_use]
    pub fn attachments(&self, id: MockId) -> usize {
        self.space(id).map_or(0, |s| s.attachments)
    }

    /// The bytes of `id` released by detaches with `DETACH_FREE`.
    #[must_use]
    pub fn released(&self, id: MockId) -> u64 {
        self.space(id).map_or(0, |s| s.released)
    }

    /// The frame behind `offset` of `id`, if one was assigned.
    #[must_use]
    pub fn frame(&self, id: MockId, offset: u64) -> Option<Frame> {
        self.space(id).and_then(|s| s.pages.get((offset / PAGE_SIZE as u64) as usize).copied().flatten())
    }

    /// Frames assigned so far (counting released ones).
    #[must_use]
    pub fn frames_assigned(&self, first: Frame) -> u64 {
        self.next_frame - first.number()
    }
}

impl Backing for MockBacking {
    type Id = MockId;

    fn rights(&self, id: MockId) -> Option<Rights> {
        self.space(id).map(|s| s.rights)
    }

    fn size(&self, id: MockId) -> Option<u64> {
        self.space(id).filter(|_| self.sizes).map(|s| (s.pages.len() * PAGE_SIZE) as u64)
    }

    fn map(&mut self, id: MockId, offset: u64, access: Access) -> Result<(Frame, Rights), BackingError> {
        let next = self.next_frame;
        let fail = self.fail_after;
        let s = self.spaces.get_mut(id.0 as usize).and_then(Option::as_mut).ok_or(BackingError::UnknownDataspace)?;
        if !s.rights.allows(access) {
            return Err(BackingError::Forbidden(access));
        }
        let slot = s.pages.get_mut((offset / PAGE_SIZE as u64) as usize).ok_or(BackingError::OutOfRange(offset))?;
        let rights = s.rights;
        if let Some(f) = *slot {
            return Ok((f, rights));
        }
        if fail == Some(0) {
            return Err(BackingError::OutOfMemory);
        }
        let f = Frame::from_number(next);
        *slot = Some(f);
        self.next_frame += 1;
        self.fail_after = fail.map(|n| n - 1);
        Ok((f, rights))
    }

    fn attached(&mut self, id: MockId, _region: Attachment) {
        if let Some(s) = self.spaces.get_mut(id.0 as usize).and_then(Option::as_mut) {
            s.attachments += 1;
        }
    }

    fn detached(&mut self, id: MockId, _region: Attachment) {
        if let Some(s) = self.spaces.get_mut(id.0 as usize).and_then(Option::as_mut) {
            s.attachments -= 1;
        }
    }

    fn release(&mut self, id: MockId, offset: u64, size: u64) {
        // The mock keeps the frames (another region may still show them) and only counts.
        let _ = offset;
        if let Some(s) = self.spaces.get_mut(id.0 as usize).and_then(Option::as_mut) {
            s.released += size;
        }
    }
}
