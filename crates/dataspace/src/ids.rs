//! Identifiers: dataspaces, clients (task + thread), factories, pools, task charges.

use core::fmt;

use memkit_types::Rights;

/// A dataspace id: a handle naming a dataspace, with the rights it grants.
///
/// An id names a slot and the slot's generation, so that the id of a closed dataspace never
/// names a later one, and carries rights as an L4 capability does (`L4_CAP_FPAGE_RO` /
/// `L4_CAP_FPAGE_RW`, DROPS's `L4DM_RO` / `L4DM_RW`): a new dataspace's id grants
/// [`Rights::RWX`](memkit_types::Rights::RWX); [`narrowed`](DataspaceId::narrowed) (or
/// [`Manager::share`](crate::Manager::share)) gives an id that grants less, to be passed
/// on. The manager refuses a fault, a read, a write, a copy or a change of the contents
/// beyond the id's rights, and region maps refuse to attach beyond them.
///
/// Two ids are equal (and order and hash alike) when they name the same dataspace, whatever
/// their rights, as two capabilities to one object: the mappings of a dataspace are found by
/// its id, through whichever handle they were attached.
///
/// An id is a plain value: the manager cannot tell a narrowed id from one whose rights bits
/// were set again by hand ([`from_u64`](DataspaceId::from_u64)). Rights protect against a
/// client only where ids reach it through a channel it cannot forge (a kernel's capability
/// table), as with L4 capabilities.
#[derive(Clone, Copy)]
pub struct DataspaceId(u64);

/// Bits 32..61: the generation.
const GENERATION_BITS: u32 = 29;
/// Bits 61..64: the rights the id does *not* grant (so that every id made before rights
/// existed, and every new id, grants everything).
const DENIED_SHIFT: u32 = 32 + GENERATION_BITS;
const IDENTITY_MASK: u64 = (1 << DENIED_SHIFT) - 1;

impl DataspaceId {
    /// The largest generation of a slot; a slot whose generation reaches it is retired.
    pub(crate) const MAX_GENERATION: u32 = (1 << GENERATION_BITS) - 1;

    pub(crate) const fn new(index: u32, generation: u32) -> Self {
        DataspaceId((((generation & Self::MAX_GENERATION) as u64) << 32) | index as u64)
    }

    /// The id as one number (for logs and for passing through an IPC word), rights included.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The id from [`as_u64`](DataspaceId::as_u64); unknown ids are rejected by every
    /// operation, so any value is safe to pass.
    #[must_use]
    pub const fn from_u64(raw: u64) -> Self {
        DataspaceId(raw)
    }

    /// The rights this id grants.
    #[must_use]
    pub const fn rights(self) -> Rights {
        Rights::from_bits_truncate(!(self.0 >> DENIED_SHIFT) as u8 & Rights::RWX.bits())
    }

    /// The same dataspace with at most `rights`: the rights of this id that `rights` names
    /// too. Narrowing never widens (`id.narrowed(Rights::RWX) == id` with the same rights).
    #[must_use]
    pub const fn narrowed(self, rights: Rights) -> Self {
        let keep = self.rights().bits() & rights.bits();
        let denied = (!keep & Rights::RWX.bits()) as u64;
        DataspaceId((self.0 & IDENTITY_MASK) | (denied << DENIED_SHIFT))
    }

    /// Whether the two ids name the same dataspace and grant the same rights.
    #[must_use]
    pub const fn same_handle(self, other: DataspaceId) -> bool {
        self.0 == other.0
    }

    pub(crate) const fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    pub(crate) const fn generation(self) -> u32 {
        ((self.0 >> 32) as u32) & Self::MAX_GENERATION
    }

    const fn identity(self) -> u64 {
        self.0 & IDENTITY_MASK
    }
}

impl PartialEq for DataspaceId {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for DataspaceId {}

impl PartialOrd for DataspaceId {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DataspaceId {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.identity().cmp(&other.identity())
    }
}

impl core::hash::Hash for DataspaceId {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl fmt::Debug for DataspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ds#{}.{}", self.index(), self.generation())?;
        let rights = self.rights();
        if rights != Rights::RWX {
            let r = if rights.contains(Rights::READ) { 'r' } else { '-' };
            let w = if rights.contains(Rights::WRITE) { 'w' } else { '-' };
            let x = if rights.contains(Rights::EXECUTE) { 'x' } else { '-' };
            write!(f, "/{r}{w}{x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for DataspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A client: a thread of a task, as `l4_threadid_t` names it. Every dataspace has one as
/// its owner.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ClientId {
    /// The task (address space).
    pub task: u32,
    /// The thread within the task.
    pub thread: u32,
}

impl ClientId {
    /// `L4_INVALID_ID`: names no client.
    pub const INVALID: ClientId = ClientId { task: u32::MAX, thread: u32::MAX };

    /// Thread `thread` of task `task`.
    #[must_use]
    pub const fn new(task: u32, thread: u32) -> Self {
        ClientId { task, thread }
    }

    /// Whether this is [`ClientId::INVALID`].
    #[must_use]
    pub const fn is_invalid(self) -> bool {
        self.task == u32::MAX && self.thread == u32::MAX
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}.{}", self.task, self.thread)
    }
}

/// A factory: a quota that dataspaces, tasks and nested factories are charged to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct FactoryId(pub(crate) u32);

impl FactoryId {
    /// The root factory every manager starts with.
    pub const ROOT: FactoryId = FactoryId(0);
}

impl fmt::Display for FactoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A memory pool, 0–7 (seed 003): pool 0 is the default, pool 7 ISA DMA memory below 16 MiB.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PoolId(u8);

impl PoolId {
    /// The number of pools.
    pub const COUNT: usize = 8;
    /// `L4DM_MEMPHYS_DEFAULT`: the default pool.
    pub const DEFAULT: PoolId = PoolId(0);
    /// `L4DM_MEMPHYS_ISA_DMA`: memory below 16 MiB.
    pub const ISA_DMA: PoolId = PoolId(7);
    /// The end of ISA DMA memory.
    pub const ISA_DMA_LIMIT: u64 = 16 << 20;

    /// Pool `n`, or `None` outside 0–7.
    #[must_use]
    pub const fn new(n: u32) -> Option<Self> {
        if n < Self::COUNT as u32 { Some(PoolId(n as u8)) } else { None }
    }

    /// The pool's number.
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The address every frame of the pool must end at or below, if the pool has one.
    #[must_use]
    pub const fn limit(self) -> Option<u64> {
        if self.0 == Self::ISA_DMA.0 { Some(Self::ISA_DMA_LIMIT) } else { None }
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The charge of one task (address space) created through a factory; give it back with
/// `destroy_task`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TaskCharge(pub(crate) u32);

impl TaskCharge {
    /// The charge's number.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}
