//! What the driver needs from a system under test: the dataspace manager, address spaces
//! with attach and detach, and loads and stores as a CPU makes them.
//!
//! Two systems implement it: [`SoftSystem`](crate::SoftSystem) (a [`SpaceSet`] of software
//! MMUs over the frame allocator's pools) and [`HostedSystem`](crate::HostedSystem) (the
//! hosted runtime's `System`, with real page faults in `PROT_NONE` windows).
//!
//! [`SpaceSet`]: memkit_spaces::SpaceSet

use memkit_dataspace::{DataspaceId, Manager, PoolId, Revoker};
use memkit_region::{
    AttachError, AttachRequest, DetachError, DetachFlags, Detached, ProtectError, RemapError, Translation,
};
use memkit_types::{Access, FrameSource, Page, PhysMemory, Rights, VirtAddr};

/// How an access through a space ended when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessError {
    /// The seed's error code (`-12` for out of memory).
    pub code: i32,
    /// The error, for messages.
    pub message: String,
}

/// A system under test.
pub trait Target {
    /// The pools' frame source.
    type Source: FrameSource;
    /// The access to frame contents.
    type Memory: PhysMemory;

    /// Runs `f` with the manager and a revoker over every space.
    fn manager<R>(&mut self, f: impl FnOnce(&mut Manager<Self::Source, Self::Memory>, &mut dyn Revoker) -> R) -> R;

    /// The pools the manager has, with the first frame and the number of frames each spans.
    fn pools(&self) -> Vec<(PoolId, u64, u64)>;

    /// The number of address spaces.
    fn spaces(&self) -> usize;

    /// The window of space `space`: its first byte and its size.
    fn window(&self, space: usize) -> (usize, usize);

    /// Attaches in `space`.
    ///
    /// # Errors
    /// The region map's.
    fn attach(&mut self, space: usize, req: &AttachRequest<DataspaceId>) -> Result<VirtAddr, AttachError>;

    /// One detach step in `space`.
    ///
    /// # Errors
    /// The region map's.
    fn detach(
        &mut self,
        space: usize,
        start: VirtAddr,
        size: usize,
        flags: DetachFlags,
    ) -> Result<Detached<DataspaceId>, DetachError>;

    /// Whether an access that the region map refuses comes back as an error (`false`: it
    /// would end the process, so the driver asks [`would_resolve`](Target::would_resolve)
    /// instead of making it).
    fn reports_refused_access(&self) -> bool;

    /// `mprotect` of `size` bytes from `start` in `space`.
    ///
    /// # Errors
    /// The region map's.
    fn protect(&mut self, space: usize, start: VirtAddr, size: usize, rights: Rights) -> Result<(), ProtectError>;

    /// `mremap` in place of the region at `start` from `old` to `new` bytes in `space`.
    ///
    /// # Errors
    /// The region map's.
    fn remap(&mut self, space: usize, start: VirtAddr, old: usize, new: usize) -> Result<VirtAddr, RemapError>;

    /// Whether the system says an access would be resolved (`None`: it cannot say).
    fn would_resolve(&mut self, space: usize, addr: VirtAddr, access: Access) -> Option<bool>;

    /// Loads through `space` as a CPU does, faults resolved on the way.
    ///
    /// # Errors
    /// The fault that could not be resolved.
    fn load(&mut self, space: usize, addr: VirtAddr, buf: &mut [u8]) -> Result<(), AccessError>;

    /// Stores through `space` as a CPU does.
    ///
    /// # Errors
    /// The fault that could not be resolved.
    fn store(&mut self, space: usize, addr: VirtAddr, buf: &[u8]) -> Result<(), AccessError>;

    /// The current translation of `page` in `space`, if any.
    fn translation(&mut self, space: usize, page: Page) -> Option<Translation>;

    /// Reads bytes of a page that has a readable translation, through that translation (no
    /// fault is taken).
    fn read_mapped(&mut self, space: usize, addr: VirtAddr, buf: &mut [u8]);

    /// Checks every invariant of every layer.
    ///
    /// # Panics
    /// On the first broken invariant.
    fn check_invariants(&mut self);
}
