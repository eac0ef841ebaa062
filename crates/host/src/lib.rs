//! memkit hosted on Linux: memfd RAM, `mmap` as the MMU, real page faults.
//!
//! Design principles:
//! - **RAM is one memfd** of the machine's size ([`HostRam`]); a frame is a 4 KiB offset in
//!   it, and the whole file is mapped once as a direct map for copying, zeroing and the frame
//!   allocator's headers ([`HostRam::direct_map`]). It implements
//!   [`PhysMemory`](memkit_types::PhysMemory).
//! - **An address space is a window** of virtual addresses reserved `PROT_NONE`
//!   ([`Window`]); its [`HostMmu`] implements the region map's
//!   [`Mmu`](memkit_region::Mmu) by mapping frames with `mmap(MAP_SHARED|MAP_FIXED)` at
//!   their file offset, unmapping by putting the reservation back, protecting with
//!   `mprotect`.
//! - **Faults are real.** A process-wide `SIGSEGV` handler ([`fault`]) resolves faults
//!   inside registered windows and returns, so the CPU retries the access; every other fault
//!   goes to the handler installed before it. A fault that is allowed but cannot be served
//!   (no frame left) ends the process with a message and `SIGBUS`, as Linux does for a shared
//!   mapping it cannot back; [`System::load`] and [`System::store`] resolve their pages
//!   first and return such a failure as an error instead.
//! - **Faults map around.** A fault whose aligned block of neighbours (16 pages by default,
//!   [`System::set_fault_around`]) is still empty maps the whole block from one contiguous
//!   frame run with one `mmap(MAP_POPULATE)`, paying the signal and the syscall once per
//!   block, as Linux does for file mappings; 1 keeps strict one-page laziness, whose single
//!   pages map without `MAP_POPULATE` ([`Populate`]).
//! - **The set of spaces is `memkit-spaces`'.** [`System`] keeps the dataspace manager
//!   and a [`Spaces`](memkit_spaces::Spaces) of windows behind one lock (coherence,
//!   references, the reverse index and fault-around are that crate's); what is here is
//!   what only a host has: windows, [`HostMmu`], the fault handler, probing loads and
//!   stores. [`HostedMachine::boot`] brings a memory map up (RAM, pools, manager, system).
//! - **Kernel limits are budgeted.** Runs of consecutive frames map as one VMA; the runtime
//!   counts its VMAs and fails with an error before `vm.max_map_count` ([`MappingBudget`]).
//! - **Unsafe is fenced** in small modules: [`sys`](crate) (syscalls), `ram` (the direct
//!   map), `fault` (the signal handler), [`access`] (loads and stores in windows).
//!
//! ```text
//!   program ─ load/store ─▶ window page ─(not mapped)─▶ SIGSEGV ─▶ HostSpace::lock
//!                                ▲                                   └▶ resolver: region map
//!                                └──── mmap(memfd, frame) ◀── HostMmu::map ◀┘
//! ```
//!
//! # The locking rule
//! A [`HostSpace`] keeps its state (region map and [`HostMmu`]) behind a spin lock that the
//! fault handler takes. Code outside the handler takes it only around map operations, and
//! never loads or stores window memory while holding it; the handler then can always get
//! the lock, whichever thread faults. The rule is checked per thread: [`HostSpace::with`]
//! inside itself panics; a [`System`]'s methods called from inside [`System::lock`] fail
//! with [`SystemError::Reentered`]; a fault taken while the faulting thread holds the lock
//! that resolves it ends the process with a message instead of deadlocking.
//! (Its own [`System::load`] and [`System::store`] hold the lock while they copy, on pages
//! they mapped first, so they never fault.)
//!
//! # Unsafe
//! The crate denies `unsafe`; only the modules that talk to the kernel or touch window
//! memory allow it, each stating in its own documentation what its `unsafe` relies on:
//! `sys`, `access`, `altstack`, `fault`, `ram` and `window`. `system` (and the test model)
//! only call `access`'s loads, stores and probes on window pages they resolved first.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod sys;

#[allow(unsafe_code)]
pub mod access;
#[allow(unsafe_code)]
mod altstack;
#[allow(unsafe_code)]
pub mod fault;
mod held;
mod machine;
#[allow(unsafe_code)]
mod ram;
mod space;
#[allow(unsafe_code)]
mod system;
#[allow(unsafe_code)]
mod window;

pub use altstack::{ALT_STACK_SIZE, prepare_thread};
pub use fault::{FaultResolver, RegisterError, Registration, Resolution, Unserviceable, faults_resolved};
pub use machine::{BootError, HostedMachine, PoolSource};
pub use ram::{HostHeaderMapping, HostRam, MAX_HEADER_REGIONS, RamError};
pub use space::{HostSpace, SpaceState};
pub use system::{
    DEFAULT_FAULT_AROUND, FaultAroundError, HostAddressSpace, HostSpaceId, MAX_FAULT_AROUND, RamRef, SpacesRevoker,
    Stack, System, SystemError,
};
pub use window::{HostMmu, MappingBudget, Populate, Window, WindowError};
