//! The arguments of the seed calls that take many: `l4dm_memphys_open`, `l4dm_copy_long` and
//! `l4dm_memphys_copy` (seed 003), as small `Copy` requests with named fields.
//!
//! `new` takes what the call cannot do without; the rest defaults (anywhere, no alignment, no
//! flags, no name) and is set by name, so a call reads as the seed's does:
//!
//! ```
//! # use memkit_dataspace::{CopyLength, DmFlags, MemphysCopyRequest, MemphysOpenRequest};
//! # use memkit_types::PhysAddr;
//! // l4dm_memphys_open(7, 0x20_0000, 64 KiB, 16, L4DM_CONTIGUOUS, "dma", &ds)
//! let open = MemphysOpenRequest::new(7, 64 << 10)
//!     .at(PhysAddr::new(0x20_0000))
//!     .align(16)
//!     .flags(DmFlags::CONTIGUOUS)
//!     .name("dma");
//! // l4dm_memphys_copy(&ds, 0, 0, L4DM_WHOLE_DS, 0, L4DM_MEMPHYS_ANY_ADDR, 0, 0, L4DM_COW, "c", &copy)
//! let copy = MemphysCopyRequest::new(0, 0, CopyLength::WholeDataspace, 0).flags(DmFlags::COW).name("c");
//! # let _ = (open, copy);
//! ```

use memkit_types::{PhysAddr, PhysPlacement};

use crate::flags::{CopyLength, DmFlags};

/// The by-name setters of a request, each `const`, taking the request by value and returning
/// it: `set` stores the value in the field, `union` adds flags to the field's, `fixed` places
/// the request at a fixed physical address.
macro_rules! setters {
    ($ty:ident { $( $(#[$doc:meta])* $name:ident($t:ty) => $kind:ident $($field:ident).+; )* }) => {
        impl<'a> $ty<'a> {
            $( setters!(@$kind $(#[$doc])* $name($t) => $($field).+); )*
        }
    };
    (@set $(#[$doc:meta])* $name:ident($t:ty) => $($field:ident).+) => {
        $(#[$doc])*
        #[must_use]
        pub const fn $name(mut self, value: $t) -> Self {
            self.$($field).+ = value;
            self
        }
    };
    (@union $(#[$doc:meta])* $name:ident($t:ty) => $($field:ident).+) => {
        $(#[$doc])*
        #[must_use]
        pub const fn $name(mut self, value: $t) -> Self {
            self.$($field).+ = self.$($field).+.union(value);
            self
        }
    };
    (@fixed $(#[$doc:meta])* $name:ident($t:ty) => $($field:ident).+) => {
        $(#[$doc])*
        #[must_use]
        pub const fn $name(mut self, value: $t) -> Self {
            self.$($field).+ = PhysPlacement::Fixed(value);
            self
        }
    };
}

/// The arguments of `l4dm_memphys_open` ([`Manager::memphys_open`](crate::Manager::memphys_open)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemphysOpenRequest<'a> {
    /// The pool (0–7; checked by the manager).
    pub pool: u32,
    /// At a fixed physical address (one contiguous run) or anywhere in the pool.
    pub addr: PhysPlacement,
    /// Bytes; kept as given, the backing is page (superpage) granular.
    pub size: u64,
    /// Log2 alignment of a contiguous dataspace (raised to at least the page shift).
    pub align: u32,
    /// `CONTIGUOUS`, `PINNED`, `SUPERPAGES` (and `RESIZE`, accepted).
    pub flags: DmFlags,
    /// The dataspace's name (debugging information).
    pub name: &'a str,
}

impl MemphysOpenRequest<'_> {
    /// `size` bytes from pool `pool`, anywhere, page aligned, no flags, no name.
    #[must_use]
    pub const fn new(pool: u32, size: u64) -> Self {
        MemphysOpenRequest { pool, addr: PhysPlacement::AnyAddr, size, align: 0, flags: DmFlags::empty(), name: "" }
    }
}

setters!(MemphysOpenRequest {
    /// At the fixed physical address `addr`.
    at(PhysAddr) => fixed addr;
    /// At `addr`: a fixed address or anywhere.
    placed(PhysPlacement) => set addr;
    /// Aligned to 2^`align` bytes.
    align(u32) => set align;
    /// With these flags added.
    flags(DmFlags) => union flags;
    /// Named `name`.
    name(&'a str) => set name;
});

/// The arguments of `l4dm_copy_long` ([`Manager::copy_long`](crate::Manager::copy_long)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyRequest<'a> {
    /// Where the copy starts in the source (bytes, any offset).
    pub src_offs: u64,
    /// Where the copied bytes start in the new dataspace (bytes, any offset; zeros before).
    pub dst_offs: u64,
    /// How many bytes: a count or `L4DM_WHOLE_DS`.
    pub num: CopyLength,
    /// `COW` (and `SAME_POOL` for a `memphys` copy).
    pub flags: DmFlags,
    /// The copy's name (debugging information).
    pub name: &'a str,
}

impl CopyRequest<'_> {
    /// `num` bytes from `src_offs` of the source to `dst_offs` of the copy, no flags, no name.
    #[must_use]
    pub const fn new(src_offs: u64, dst_offs: u64, num: CopyLength) -> Self {
        CopyRequest { src_offs, dst_offs, num, flags: DmFlags::empty(), name: "" }
    }
}

setters!(CopyRequest {
    /// With these flags added.
    flags(DmFlags) => union flags;
    /// Named `name`.
    name(&'a str) => set name;
});

/// The arguments of `l4dm_memphys_copy`
/// ([`Manager::memphys_copy`](crate::Manager::memphys_copy)): a [`CopyRequest`] and where the
/// copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemphysCopyRequest<'a> {
    /// Offsets, length, flags and name, as for `l4dm_copy_long`.
    pub copy: CopyRequest<'a>,
    /// The copy's pool (0–7; ignored with [`DmFlags::SAME_POOL`]).
    pub dst_pool: u32,
    /// At a fixed physical address (one contiguous run) or anywhere in the pool.
    pub dst_addr: PhysPlacement,
    /// The copy's size at least (bytes): the copy has `max(dst_size, dst_offs + num)`.
    pub dst_size: u64,
    /// Log2 alignment of the copy.
    pub dst_align: u32,
}

impl MemphysCopyRequest<'_> {
    /// `num` bytes from `src_offs` of the source to `dst_offs` of a copy in pool `dst_pool`,
    /// anywhere, no larger than the copied bytes need, page aligned, no flags, no name.
    #[must_use]
    pub const fn new(src_offs: u64, dst_offs: u64, num: CopyLength, dst_pool: u32) -> Self {
        MemphysCopyRequest {
            copy: CopyRequest::new(src_offs, dst_offs, num),
            dst_pool,
            dst_addr: PhysPlacement::AnyAddr,
            dst_size: 0,
            dst_align: 0,
        }
    }
}

setters!(MemphysCopyRequest {
    /// At the fixed physical address `addr`.
    at(PhysAddr) => fixed dst_addr;
    /// At `addr`: a fixed address or anywhere.
    placed(PhysPlacement) => set dst_addr;
    /// At least `size` bytes large.
    size(u64) => set dst_size;
    /// Aligned to 2^`align` bytes.
    align(u32) => set dst_align;
    /// With these flags added.
    flags(DmFlags) => union copy.flags;
    /// Named `name`.
    name(&'a str) => set copy.name;
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_setters() {
        let o = MemphysOpenRequest::new(3, 100);
        assert_eq!(
            (o.pool, o.addr, o.size, o.align, o.flags, o.name),
            (3, PhysPlacement::AnyAddr, 100, 0, DmFlags::empty(), "")
        );
        let a = PhysAddr::new(0x1000);
        let o = o.at(a).align(21).flags(DmFlags::PINNED).flags(DmFlags::CONTIGUOUS).name("n");
        assert_eq!(
            (o.addr, o.align, o.flags, o.name),
            (PhysPlacement::Fixed(a), 21, DmFlags::PINNED | DmFlags::CONTIGUOUS, "n")
        );
        assert_eq!(o.placed(PhysPlacement::AnyAddr).addr, PhysPlacement::AnyAddr);

        let c = CopyRequest::new(1, 2, CopyLength::Bytes(u64::MAX)).flags(DmFlags::COW).name("c");
        assert_eq!(
            (c.src_offs, c.dst_offs, c.num, c.flags, c.name),
            (1, 2, CopyLength::Bytes(u64::MAX), DmFlags::COW, "c")
        );

        let m = MemphysCopyRequest::new(1, 2, CopyLength::WholeDataspace, 7);
        assert_eq!((m.dst_pool, m.dst_addr, m.dst_size, m.dst_align), (7, PhysPlacement::AnyAddr, 0, 0));
        let m = m.at(a).size(u64::MAX).align(12).flags(DmFlags::SAME_POOL).name("m");
        assert_eq!((m.dst_addr, m.dst_size, m.dst_align), (PhysPlacement::Fixed(a), u64::MAX, 12));
        assert_eq!(m.copy, CopyRequest::new(1, 2, CopyLength::WholeDataspace).flags(DmFlags::SAME_POOL).name("m"));
    }
}
