//! The lifetime of dataspaces and their handles: references, `close`, `close_all`, freeing
//! with the last reference (see the lifetime rule on [`Manager`]); and the queries on handles
//! (`first_id`, `info`, `rights`, `share`).

use memkit_types::{FrameSource, PhysMemory, Rights};

use super::{Info, Manager, lookup, lookup_open, release_entries};
use crate::error::{CloseAllError, CloseError, InfoError, RefError, ShareError};
use crate::flags::DmFlags;
use crate::ids::{ClientId, DataspaceId};

impl<S: FrameSource, M: PhysMemory> Manager<S, M> {
    /// Frees a dataspace's frames and charge and its slot.
    pub(super) fn destroy(&mut self, id: DataspaceId) {
        let slot = &mut self.slots[id.index()];
        let Some(ds) = slot.ds.take() else { return };
        // A slot whose generation would wrap is retired, so that no id ever names two
        // dataspaces.
        let retired = slot.generation >= DataspaceId::MAX_GENERATION;
        if !retired {
            slot.generation += 1;
        }
        release_entries(&self.pools, &mut self.shares, &ds.entries, ds.kind.is_bound());
        if let Some(f) = self.factory_mut(ds.factory) {
            f.used -= ds.charge();
        }
        if !retired {
            self.free_slots.push(id.index() as u32);
        }
        if ds.open {
            self.live -= 1;
        }
    }

    /// Takes a reference (an attachment or an extra handle) to an open dataspace.
    ///
    /// # Errors
    /// [`RefError::InvalidId`] for an unknown or closed dataspace,
    /// [`RefError::CountOutOfRange`] at `u32::MAX` references.
    pub fn inc_ref(&mut self, ds: DataspaceId) -> Result<(), RefError> {
        let d = lookup_open(&mut self.slots, ds).ok_or(RefError::InvalidId(ds))?;
        d.refs = d.refs.checked_add(1).ok_or(RefError::CountOutOfRange(ds, d.refs))?;
        Ok(())
    }

    /// Drops one reference; the last reference to a closed dataspace frees it.
    ///
    /// # Errors
    /// As [`dec_refcnt`](Manager::dec_refcnt).
    pub fn dec_ref(&mut self, ds: DataspaceId) -> Result<(), RefError> {
        self.dec_refcnt(ds, 1)
    }

    /// `L4::Kobject::dec_refcnt(diff)`: drops `diff` references at once.
    ///
    /// # Errors
    /// [`RefError::InvalidId`] for an unknown (or freed) dataspace,
    /// [`RefError::CountOutOfRange`] when fewer than `diff` references are held.
    pub fn dec_refcnt(&mut self, ds: DataspaceId, diff: u32) -> Result<(), RefError> {
        let d = lookup(&mut self.slots, ds).ok_or(RefError::InvalidId(ds))?;
        d.refs = d.refs.checked_sub(diff).ok_or(RefError::CountOutOfRange(ds, d.refs))?;
        if d.refs == 0 && !d.open {
            self.destroy(ds);
        }
        Ok(())
    }

    /// `l4dm_close`: drops the owner's handle. The memory goes now if no reference remains,
    /// else with the last reference (see the lifetime rule on [`Manager`]).
    ///
    /// # Errors
    /// [`CloseError::InvalidId`] for an unknown or closed dataspace,
    /// [`CloseError::PermissionDenied`] unless `caller` is the owner and the id grants
    /// `WRITE` (as for `resize` to 0: a read-only handle cannot end the memory).
    pub fn close(&mut self, caller: ClientId, ds: DataspaceId) -> Result<(), CloseError> {
        let d = lookup_open(&mut self.slots, ds).ok_or(CloseError::InvalidId(ds))?;
        if d.owner != caller || !ds.rights().contains(Rights::WRITE) {
            return Err(CloseError::PermissionDenied(ds, caller));
        }
        self.close_unchecked(ds);
        Ok(())
    }

    pub(super) fn close_unchecked(&mut self, ds: DataspaceId) {
        let Some(d) = lookup_open(&mut self.slots, ds) else { return };
        d.open = false;
        let refs = d.refs;
        self.live -= 1;
        if refs == 0 {
            self.destroy(ds);
        }
    }

    /// `l4dm_close_all`: closes every dataspace owned by `client`, or with
    /// [`DmFlags::SAME_TASK`] by any thread of `client`'s task. Any thread of that task may
    /// ask. Returns how many were closed.
    ///
    /// # Errors
    /// [`CloseAllError::InvalidClient`] for [`ClientId::INVALID`],
    /// [`CloseAllError::PermissionDenied`] when `caller` is in another task.
    pub fn close_all(&mut self, caller: ClientId, client: ClientId, flags: DmFlags) -> Result<u32, CloseAllError> {
        if client.is_invalid() {
            return Err(CloseAllError::InvalidClient(client));
        }
        if caller.task != client.task {
            return Err(CloseAllError::PermissionDenied(client, caller));
        }
        let same_task = flags.contains(DmFlags::SAME_TASK);
        let mut closed = 0;
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let Some(d) = slot.ds.as_ref() else { continue };
            let hit = if same_task { d.owner.task == client.task } else { d.owner == client };
            if d.open && hit {
                self.close_unchecked(DataspaceId::new(i as u32, slot.generation));
                closed += 1;
            }
        }
        Ok(closed)
    }

    // ----------------------------------------------------------------- queries

    /// The first live dataspace, to start an iteration with [`Info::next_id`].
    #[must_use]
    pub fn first_id(&self) -> Option<DataspaceId> {
        self.next_open_from(0)
    }

    fn next_open_from(&self, index: usize) -> Option<DataspaceId> {
        self.slots
            .iter()
            .enumerate()
            .skip(index)
            .find(|(_, s)| s.ds.as_ref().is_some_and(|d| d.open))
            .map(|(i, s)| DataspaceId::new(i as u32, s.generation))
    }

    /// `l4dm_mem_info`: size, owner, name and the next id of a live dataspace. Anyone may ask
    /// (it is debugging information), so `-L4_EPERM` does not occur.
    ///
    /// # Errors
    /// [`InfoError::InvalidId`] for an unknown or closed dataspace.
    pub fn info(&self, ds: DataspaceId) -> Result<Info<'_>, InfoError> {
        let d = self
            .slots
            .get(ds.index())
            .filter(|s| s.generation == ds.generation())
            .and_then(|s| s.ds.as_ref())
            .filter(|d| d.open)
            .ok_or(InfoError::InvalidId(ds))?;
        Ok(Info {
            size: d.size,
            owner: d.owner,
            name: &d.name,
            next_id: self.next_open_from(ds.index() + 1),
            kind: d.kind,
            pool: d.pool,
            align: d.align,
            factory: d.factory,
            refs: d.refs,
        })
    }

    /// The rights the id `ds` grants, if it names an open dataspace (what a region map may
    /// attach it with at most).
    ///
    /// # Errors
    /// [`InfoError::InvalidId`] for an unknown or closed dataspace.
    pub fn rights(&self, ds: DataspaceId) -> Result<Rights, InfoError> {
        self.info(ds).map(|_| ds.rights())
    }

    /// `l4dm_share`: an id of the open dataspace `ds` granting `rights` (e.g. read-only,
    /// `L4DM_RO`), to pass to another client. A handle can only be narrowed: the new id
    /// grants nothing `ds` does not. The new id names the same dataspace (it compares equal
    /// to `ds`); the lifetime rule is unchanged (the owner's handle, or a reference, keeps the
    /// memory alive).
    ///
    /// # Errors
    /// [`ShareError::InvalidId`] for an unknown or closed dataspace, [`ShareError::Widening`]
    /// when `rights` names a right `ds` does not grant.
    pub fn share(&self, ds: DataspaceId, rights: Rights) -> Result<DataspaceId, ShareError> {
        self.info(ds).map_err(|_| ShareError::InvalidId(ds))?;
        if !ds.rights().contains(rights) {
            return Err(ShareError::Widening(ds, rights));
        }
        Ok(ds.narrowed(rights))
    }
}
