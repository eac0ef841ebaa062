//! The manager as the region map of one space sees it ([`ManagerBacking`]), and the revoker
//! that takes rights away from a dataspace's mappings in every space ([`SpacesRevoker`]).

use alloc::vec::Vec;

use memkit_dataspace::{DataspaceId, Manager, PageRange, RevokeKind, Revoker};
use memkit_region::{AddressSpace, Attachment, Backing, BackingError, Mmu, TlbFlush};
use memkit_types::{Access, Frame, FrameSource, PAGE_SIZE, PhysMemory, Rights};

use super::SpaceId;
use crate::rmap::ReverseIndex;

/// The frames copy-on-write breaks replaced during one operation (or the `DETACH_FREE`
/// releases it made): the first without allocating, any further ones in a list.
#[derive(Debug)]
pub(super) struct Replaced<T = Frame> {
    first: Option<(DataspaceId, u64, T)>,
    more: Vec<(DataspaceId, u64, T)>,
}

impl<T> Default for Replaced<T> {
    fn default() -> Self {
        Replaced { first: None, more: Vec::new() }
    }
}

impl<T: Copy> Replaced<T> {
    pub(super) fn push(&mut self, r: (DataspaceId, u64, T)) {
        if self.first.is_none() {
            self.first = Some(r);
        } else {
            self.more.push(r);
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (DataspaceId, u64, T)> + '_ {
        self.first.iter().chain(self.more.iter()).copied()
    }
}

/// The manager as the region map of one space sees it ([`Backing`]), for one operation:
/// frames from the manager, attachments recorded in the reverse index, references taken
/// and dropped with the first and the last attachment of a dataspace.
pub(super) struct ManagerBacking<'a, S, P> {
    manager: &'a mut Manager<S, P>,
    index: &'a mut ReverseIndex,
    /// The space the operation is in.
    space: SpaceId,
    /// The copy-on-write breaks during this operation: (dataspace, offset, old frame). A
    /// fault maps one page, so it breaks at most one and allocates nothing; an eager attach
    /// may break one per page.
    pub(super) replaced: Replaced,
    /// Whether the region map is told the dataspaces' sizes ([`Spaces::set_check_sizes`]).
    sizes: bool,
    /// The `DETACH_FREE` releases to carry out once the region map is done (a detach makes
    /// one; a replacing attach or a move may make several).
    pub(super) release: Replaced<u64>,
}

impl<'a, S, P> ManagerBacking<'a, S, P> {
    pub(super) fn new(
        manager: &'a mut Manager<S, P>,
        index: &'a mut ReverseIndex,
        space: SpaceId,
        sizes: bool,
    ) -> Self {
        ManagerBacking { manager, index, space, sizes, replaced: Replaced::default(), release: Replaced::default() }
    }
}

impl<S: FrameSource, P: PhysMemory> Backing for ManagerBacking<'_, S, P> {
    type Id = DataspaceId;

    fn rights(&self, id: DataspaceId) -> Option<Rights> {
        // The rights of the handle: attaching beyond them is refused.
        self.manager.rights(id).ok()
    }

    fn size(&self, id: DataspaceId) -> Option<u64> {
        if !self.sizes {
            return None;
        }
        self.manager.info(id).ok().map(|i| i.size)
    }

    fn map(&mut self, id: DataspaceId, offset: u64, access: Access) -> Result<(Frame, Rights), BackingError> {
        match self.manager.map(id, offset, access) {
            Ok(m) => {
                if let Some(old) = m.replaced {
                    self.replaced.push((id, offset, old));
                }
                Ok((m.frame, m.rights))
            }
            Err(memkit_dataspace::MapError::InvalidId(_)) => Err(BackingError::UnknownDataspace),
            Err(memkit_dataspace::MapError::OffsetOutOfRange(o, _)) => Err(BackingError::OutOfRange(o)),
            Err(memkit_dataspace::MapError::Forbidden(_, access)) => Err(BackingError::Forbidden(access)),
            Err(memkit_dataspace::MapError::OutOfMemory(_)) => Err(BackingError::OutOfMemory),
            // A refusal a later manager adds: the access is refused.
            Err(_) => Err(BackingError::Forbidden(access)),
        }
    }

    fn large_run(&mut self, id: DataspaceId, offset: u64, access: Access) -> Option<(Frame, Rights)> {
        self.manager.large_run(id, offset, access)
    }

    fn attached(&mut self, id: DataspaceId, region: Attachment) {
        if self.index.insert(id, self.space, region) {
            // The attach checked `rights` (an open handle) just before: this succeeds.
            let _ = self.manager.inc_ref(id);
        }
    }

    fn detached(&mut self, id: DataspaceId, region: Attachment) {
        if self.index.remove(id, self.space, region) {
            let _ = self.manager.dec_ref(id);
        }
    }

    fn trimmed(&mut self, id: DataspaceId, old: Attachment, kept: Attachment) {
        // The new entry first: the dataspace never looks unreferenced.
        let _ = self.index.insert(id, self.space, kept);
        if old.start != kept.start || old.offset != kept.offset {
            let _ = self.index.remove(id, self.space, old);
        }
    }

    fn release(&mut self, id: DataspaceId, offset: u64, size: u64) {
        self.release.push((id, offset, size));
    }
}

/// A space and the backing of one operation in it.
pub(super) type SpaceOp<'a, M, S, P> = (&'a mut AddressSpace<DataspaceId, M>, ManagerBacking<'a, S, P>);

/// A slot of [`Spaces`].
pub(super) type Slot<M> = Option<AddressSpace<DataspaceId, M>>;

/// Takes rights away from the mappings of a dataspace's pages, in every space, visiting
/// only the regions the [`ReverseIndex`] names for those pages.
///
/// One revocation flushes each space's MMU once, however many of its regions lost
/// rights (one round of IPIs per space on a multiprocessor), and before it returns: the
/// manager frees or shares the frames only after [`Revoker::revoke`] has returned.
#[derive(Debug)]
pub struct SpacesRevoker<'a, M> {
    pub(super) spaces: &'a mut [Slot<M>],
    /// The flush each space owes (one token per slot, empty between revocations).
    pub(super) pending: &'a mut [TlbFlush],
    pub(super) index: &'a ReverseIndex,
}

impl<M: Mmu> Revoker for SpacesRevoker<'_, M> {
    fn revoke(&mut self, ds: DataspaceId, pages: PageRange, kind: RevokeKind) {
        let keep = match kind {
            RevokeKind::Write => Rights::READ | Rights::EXECUTE,
            RevokeKind::All => Rights::empty(),
        };
        let offset = pages.start.saturating_mul(PAGE_SIZE as u64);
        let size = pages.end.saturating_sub(pages.start).saturating_mul(PAGE_SIZE as u64);
        let (spaces, pending) = (&mut *self.spaces, &mut *self.pending);
        self.index.for_each_showing(ds, offset, size, |space, region| {
            let (Some(Some(s)), Some(owed)) = (spaces.get_mut(space.0), pending.get_mut(space.0)) else { return };
            // A protect the MMU refuses falls back to unmapping, which always leaves a
            // correct state: the pages fault again and are resolved with the right rights.
            // Either way every page of the range is flushed, whatever the MMU changed.
            let flush = region.revoke_deferred(&mut s.mmu, offset, size, keep).or_else(|_| {
                if let Some((first, count)) = region.pages_showing(offset, size) {
                    owed.add_pages(first, count);
                }
                region.revoke_deferred(&mut s.mmu, offset, size, Rights::empty())
            });
            if let Ok(flush) = flush {
                owed.absorb(flush);
            }
        });
        flush_pending(spaces, pending);
    }
}

/// Flushes what each space owes, once per MMU, and leaves every token empty.
pub(super) fn flush_pending<M: Mmu>(spaces: &[Slot<M>], pending: &mut [TlbFlush]) {
    for (slot, owed) in spaces.iter().zip(pending.iter_mut()) {
        if owed.is_empty() {
            continue;
        }
        let owed = core::mem::replace(owed, TlbFlush::none());
        match slot {
            Some(s) => owed.flush(&s.mmu),
            // No space, no translation to flush.
            None => owed.ignore(),
        }
    }
}
