//! The seeds' flags: `Mem_alloc_flags` (000) and the `L4DM_*` constants (003).

bitflags::bitflags! {
    /// `L4Re::Mem_alloc::Mem_alloc_flags` (seed 000).
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct MemAllocFlags: u32 {
        /// `Continuous`: physically contiguous memory.
        const CONTINUOUS = 0x01;
        /// `Pinned`: allocated at creation, never given back while the dataspace lives.
        const PINNED = 0x02;
        /// `Super_pages`: backed by 2 MiB frames, alignment at least 2 MiB.
        const SUPER_PAGES = 0x04;
        /// `Fixed_paddr`: at the given physical address (only without an MMU).
        const FIXED_PADDR = 0x08;
    }
}

bitflags::bitflags! {
    /// The `L4DM_*` and `L4DM_MEMPHYS_*` flags (seed 003), with their values.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct DmFlags: u32 {
        /// `L4DM_RESIZE`: allow resize. memkit lets the owner resize every dataspace; the
        /// flag is accepted and reported back by `info`.
        const RESIZE = 0x0000_0080;
        /// `L4DM_CONTIGUOUS`: physically contiguous memory.
        const CONTIGUOUS = 0x0000_0100;
        /// `L4DM_PINNED`: allocated at creation, no page faults once mapped.
        const PINNED = 0x0000_0200;
        /// `L4DM_COW`: a copy shares the source's frames until either side writes.
        const COW = 0x0000_0400;
        /// `L4DM_SAME_TASK` (`close_all`): every thread of the client's task.
        const SAME_TASK = 0x0000_2000;
        /// `L4DM_MEMPHYS_SUPERPAGES`: 2 MiB frames.
        const SUPERPAGES = 0x0001_0000;
        /// `L4DM_MEMPHYS_SAME_POOL` (copy): the copy's pool is the source's.
        const SAME_POOL = 0x0002_0000;
    }
}

/// `L4DM_WHOLE_DS`: a copy length meaning "to the end of the source".
pub const WHOLE_DS: i64 = -1;
/// `L4DM_MEMPHYS_ANY_ADDR`: let the pool find a place.
pub const ANY_ADDR: i64 = -1;
/// `L4DM_MEMPHYS_DEFAULT`.
pub const MEMPHYS_DEFAULT: u32 = 0;
/// `L4DM_MEMPHYS_ISA_DMA`.
pub const MEMPHYS_ISA_DMA: u32 = 7;

/// How many bytes a copy takes from the source.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CopyLength {
    /// `L4DM_WHOLE_DS`: from the source offset to the end of the source.
    WholeDataspace,
    /// Exactly this many bytes.
    Bytes(u64),
}
