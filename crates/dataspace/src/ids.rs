//! Identifiers: dataspaces, clients (task + thread), factories, pools, task charges.

use core::fmt;

/// A dataspace id: a slot index and the slot's generation, so that the id of a closed
/// dataspace never names a later one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DataspaceId(u64);

impl DataspaceId {
    pub(crate) const fn new(index: u32, generation: u32) -> Self {
        DataspaceId(((generation as u64) << 32) | index as u64)
    }

    /// The id as one number (for logs and for passing through an IPC word).
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

    pub(crate) const fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    pub(crate) const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl fmt::Debug for DataspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ds#{}.{}", self.index(), self.generation())
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
