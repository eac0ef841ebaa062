//! One error enum per operation, each mapping back to the seeds' codes with `code()`.
//!
//! The seeds name `-L4_ENOMEM`, `-L4_ERANGE`, `-L4_EINVAL`, `-L4_EPERM` and `-L4_ENOHANDLE`;
//! the numbers and their sign convention are [`memkit_types::l4`]'s (L4Re's `l4sys/err.h`, and
//! DROPS for `L4_ENOHANDLE`): `code()` returns the negated value. `-L4_EIPC` and `-L4_ENODM`
//! of seed 003 describe a failed IPC to the manager or a missing manager: an in-process call
//! cannot fail that way, so no error here maps to them.

use crate::ids::{ClientId, DataspaceId, FactoryId, PoolId};
use memkit_types::{Access, FrameCount, PhysAddr, Rights};

#[allow(clippy::wildcard_imports)]
use memkit_types::l4::*;

macro_rules! error_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $var:ident ( $($b:ident : $ty:ty),* ) => $code:expr, $fmt:literal;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $var($($ty),*), )*
        }

        impl $name {
            /// The seed's return value for this error (a negative L4 error code).
            #[must_use]
            #[allow(unused_variables)]
            pub const fn code(&self) -> i32 {
                match *self {
                    $( $name::$var($($b),*) => $code, )*
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match *self {
                    $( $name::$var($($b),*) => write!(f, $fmt), )*
                }
            }
        }

        impl core::error::Error for $name {}
    };
}

error_enum! {
    /// Why creating a dataspace (`alloc`, `mem_open`, `memphys_open`) failed. Nothing was
    /// allocated or charged.
    pub enum CreateError {
        /// The size cannot be served: zero, negative without `Continuous`, or beyond the
        /// largest dataspace (`-L4_ERANGE`).
        SizeNotSupported(size: i128) => -L4_ERANGE, "size {size} is not supported";
        /// The log2 alignment is above the largest supported one (`-L4_ERANGE`).
        AlignmentOutOfRange(align: u32) => -L4_ERANGE, "log2 alignment {align} is out of range";
        /// A pool number outside 0–7 (`-L4_EINVAL`).
        PoolOutOfRange(pool: u32) => -L4_EINVAL, "pool {pool} is outside 0-7";
        /// The pool has no memory configured (`-L4_ENOENT`).
        PoolMissing(pool: PoolId) => -L4_ENOENT, "pool {pool} has no memory";
        /// `Fixed_paddr` through `Mem_alloc` on a system with an MMU (`-L4_EINVAL`).
        FixedAddressNeedsNoMmu(addr: PhysAddr) => -L4_EINVAL,
            "a fixed physical address ({addr}) is only honoured without an MMU";
        /// The fixed address is not aligned to the page (or superpage) size (`-L4_EINVAL`).
        MisalignedAddress(addr: PhysAddr) => -L4_EINVAL, "physical address {addr} is misaligned";
        /// The fixed range is outside the pool, reserved, or overflows (`-L4_ERANGE`).
        AddressOutOfPool(addr: PhysAddr) => -L4_ERANGE, "physical address {addr} is outside the pool";
        /// A frame of the fixed range is already in use (`-L4_ENOMEM`).
        AddressInUse(addr: PhysAddr) => -L4_ENOMEM, "physical address {addr} is in use";
        /// The factory does not exist (`-L4_EINVAL`).
        InvalidFactory(factory: FactoryId) => -L4_EINVAL, "factory {factory} does not exist";
        /// The factory (or one it is nested in) has less than `needed` bytes left (`-L4_ENOMEM`).
        QuotaExceeded(factory: FactoryId, needed: u64) => -L4_ENOMEM,
            "factory {factory} has no quota for {needed} bytes";
        /// The pool has no free run of this many frames (`-L4_ENOMEM`).
        OutOfMemory(frames: FrameCount) => -L4_ENOMEM, "no memory for {frames:?}";
        /// Every dataspace id is taken (`-L4_ENOHANDLE`).
        NoHandle(live: u32) => -L4_ENOHANDLE, "no dataspace id left ({live} live)";
    }
}

error_enum! {
    /// Why `resize` failed. The dataspace is unchanged.
    pub enum ResizeError {
        /// Unknown or closed dataspace (`-L4_EINVAL`).
        InvalidId(ds: DataspaceId) => -L4_EINVAL, "dataspace {ds} does not exist";
        /// The caller is not the owner, or the handle does not grant `WRITE` (`-L4_EPERM`).
        PermissionDenied(ds: DataspaceId, caller: ClientId) => -L4_EPERM,
            "{caller} does not own dataspace {ds}";
        /// The new size is beyond the largest dataspace (`-L4_ERANGE`).
        SizeNotSupported(size: u64) => -L4_ERANGE, "size {size} is not supported";
        /// The owning factory has less than `needed` bytes left (`-L4_ENOMEM`).
        QuotaExceeded(factory: FactoryId, needed: u64) => -L4_ENOMEM,
            "factory {factory} has no quota for {needed} bytes";
        /// The pool is out of frames (`-L4_ENOMEM`).
        OutOfMemory(frames: FrameCount) => -L4_ENOMEM, "no memory for {frames:?}";
        /// A physically contiguous dataspace cannot grow in place: the frames after it are
        /// taken (`-L4_ENOMEM`).
        CannotGrowInPlace(next: PhysAddr) => -L4_ENOMEM, "the memory at {next} is not free";
    }
}

error_enum! {
    /// Why `info` failed.
    pub enum InfoError {
        /// Unknown or closed dataspace (`-L4_EINVAL`).
        InvalidId(ds: DataspaceId) => -L4_EINVAL, "dataspace {ds} does not exist";
    }
}

error_enum! {
    /// Why `close` failed. Nothing was closed.
    pub enum CloseError {
        /// Unknown or closed dataspace (`-L4_EINVAL`).
        InvalidId(ds: DataspaceId) => -L4_EINVAL, "dataspace {ds} does not exist";
        /// Only the owner may close a dataspace, through a handle granting `WRITE`
        /// (`-L4_EPERM`).
        PermissionDenied(ds: DataspaceId, caller: ClientId) => -L4_EPERM,
            "{caller} does not own dataspace {ds}";
    }
}

error_enum! {
    /// Why `close_all` failed. Nothing was closed.
    pub enum CloseAllError {
        /// The client id is the invalid id (`-L4_EINVAL`).
        InvalidClient(client: ClientId) => -L4_EINVAL, "{client} is not a valid client";
        /// Only threads of the client's own task may close its dataspaces (`-L4_EPERM`).
        PermissionDenied(client: ClientId, caller: ClientId) => -L4_EPERM,
            "{caller} may not close the dataspaces of {client}";
    }
}

error_enum! {
    /// Why `copy`, `copy_long` or `memphys_copy` failed. No copy exists and the source is
    /// unchanged (apart from copy-on-write marks, which are invisible).
    pub enum CopyError {
        /// Unknown or closed source dataspace (`-L4_EINVAL`).
        InvalidId(ds: DataspaceId) => -L4_EINVAL, "dataspace {ds} does not exist";
        /// The caller's task does not own the source, or the handle does not grant `READ`
        /// (`-L4_EPERM`).
        PermissionDenied(ds: DataspaceId, caller: ClientId) => -L4_EPERM,
            "{caller} may not copy dataspace {ds}";
        /// The source range `offset .. offset + length` is not inside the source (`-L4_ERANGE`).
        SourceOutOfRange(offset: u64, length: u64) => -L4_ERANGE,
            "source range {offset:#x}+{length:#x} is outside the dataspace";
        /// The destination offset plus the length overflows (`-L4_ERANGE`).
        DestinationOutOfRange(offset: u64, length: u64) => -L4_ERANGE,
            "destination range {offset:#x}+{length:#x} overflows";
        /// Creating the destination failed.
        Create(error: CreateError) => error.code(), "creating the copy: {error}";
    }
}

error_enum! {
    /// Why `map` failed. Nothing changed.
    pub enum MapError {
        /// Unknown dataspace, or closed with no reference left (`-L4_EINVAL`).
        InvalidId(ds: DataspaceId) => -L4_EINVAL, "dataspace {ds} does not exist";
        /// The offset is at or past the dataspace's size (`-L4_ERANGE`).
        OffsetOutOfRange(offset: u64, size: u64) => -L4_ERANGE,
            "offset {offset:#x} is past the end ({size:#x})";
        /// The id's rights do not allow this access, e.g. a write fault through a read-only
        /// handle (`-L4_EPERM`).
        Forbidden(ds: DataspaceId, access: Access) => -L4_EPERM,
            "the handle {ds} does not allow {access:?}";
        /// No frame for a first touch or a copy-on-write break (`-L4_ENOMEM`).
        OutOfMemory(frames: FrameCount) => -L4_ENOMEM, "no memory for {frames:?}";
    }
}

error_enum! {
    /// Why a range operation (`clear`, `allocate`, `read`, `write`) failed. Pages it finished
    /// before the failure stay done (each page is done completely or not at all).
    pub enum RangeError {
        /// Unknown dataspace, or closed with no reference left (`-L4_EINVAL`).
        InvalidId(ds: DataspaceId) => -L4_EINVAL, "dataspace {ds} does not exist";
        /// The caller is not the owner (`-L4_EPERM`).
        PermissionDenied(ds: DataspaceId, caller: ClientId) => -L4_EPERM,
            "{caller} does not own dataspace {ds}";
        /// `offset .. offset + length` is not inside the dataspace (`-L4_ERANGE`).
        OutOfRange(offset: u64, length: u64) => -L4_ERANGE,
            "range {offset:#x}+{length:#x} is outside the dataspace";
        /// The id's rights do not allow this access: a read without `READ`, a write without
        /// `WRITE` (`-L4_EPERM`).
        Forbidden(ds: DataspaceId, access: Access) => -L4_EPERM,
            "the handle {ds} does not allow {access:?}";
        /// No frame to populate a page or break copy-on-write (`-L4_ENOMEM`).
        OutOfMemory(frames: FrameCount) => -L4_ENOMEM, "no memory for {frames:?}";
    }
}

error_enum! {
    /// Why `phys_addr` failed.
    pub enum PhysAddrError {
        /// Unknown dataspace, or closed with no reference left (`-L4_EINVAL`).
        InvalidId(ds: DataspaceId) => -L4_EINVAL, "dataspace {ds} does not exist";
        /// The offset is at or past the dataspace's size (`-L4_ERANGE`).
        OffsetOutOfRange(offset: u64, size: u64) => -L4_ERANGE,
            "offset {offset:#x} is past the end ({size:#x})";
        /// The page has no frame of its own yet (never touched, or shared copy-on-write):
        /// populate it with `allocate` first (`-L4_EINVAL`).
        NotResident(offset: u64) => -L4_EINVAL, "the page at offset {offset:#x} is not resident";
        /// A physical address lets a device read and write the memory: the id must grant
        /// both (`-L4_EPERM`).
        Forbidden(ds: DataspaceId) => -L4_EPERM, "the handle {ds} does not allow read and write";
    }
}

error_enum! {
    /// Why `share` failed.
    pub enum ShareError {
        /// Unknown or closed dataspace (`-L4_EINVAL`).
        InvalidId(ds: DataspaceId) => -L4_EINVAL, "dataspace {ds} does not exist";
        /// The rights asked for are not all granted by the id shared (`-L4_EPERM`): a handle
        /// can only be narrowed.
        Widening(ds: DataspaceId, rights: Rights) => -L4_EPERM,
            "the handle {ds} does not grant {rights:?}";
    }
}

error_enum! {
    /// Why `inc_ref` / `dec_ref` failed.
    pub enum RefError {
        /// Unknown dataspace (for `inc_ref`: or closed) (`-L4_EINVAL`).
        InvalidId(ds: DataspaceId) => -L4_EINVAL, "dataspace {ds} does not exist";
        /// `dec_ref` below zero, or `inc_ref` past the counter's range (`-L4_ERANGE`).
        CountOutOfRange(ds: DataspaceId, refs: u32) => -L4_ERANGE,
            "reference count of {ds} ({refs}) would leave its range";
    }
}

error_enum! {
    /// Why `create_factory` failed.
    pub enum FactoryError {
        /// The parent factory does not exist (`-L4_EINVAL`).
        InvalidFactory(factory: FactoryId) => -L4_EINVAL, "factory {factory} does not exist";
        /// The parent has less than `limit` bytes left (`-L4_ENOMEM`).
        QuotaExceeded(factory: FactoryId, limit: u64) => -L4_ENOMEM,
            "factory {factory} has no quota for {limit} bytes";
        /// Every factory id is taken (`-L4_ENOHANDLE`).
        NoHandle(live: u32) => -L4_ENOHANDLE, "no factory id left ({live} live)";
    }
}

error_enum! {
    /// Why `destroy_factory` failed. Nothing changed.
    pub enum DestroyFactoryError {
        /// The factory does not exist, or is the root (`-L4_EINVAL`).
        InvalidFactory(factory: FactoryId) => -L4_EINVAL, "factory {factory} cannot be destroyed";
        /// Dataspaces, factories or tasks are still charged to it (`-L4_EBUSY`).
        InUse(factory: FactoryId, used: u64) => -L4_EBUSY, "factory {factory} still has {used} bytes charged";
    }
}

error_enum! {
    /// Why `create_task` failed (or `destroy_task`: `InvalidTask`).
    pub enum TaskError {
        /// The factory does not exist (`-L4_EINVAL`).
        InvalidFactory(factory: FactoryId) => -L4_EINVAL, "factory {factory} does not exist";
        /// The factory has less than `bytes` left (`-L4_ENOMEM`).
        QuotaExceeded(factory: FactoryId, bytes: u64) => -L4_ENOMEM,
            "factory {factory} has no quota for {bytes} bytes";
        /// The task charge is not known (already destroyed) (`-L4_EINVAL`).
        InvalidTask(task: u32) => -L4_EINVAL, "task charge {task} does not exist";
    }
}
