//! The process-wide `SIGSEGV` handler that turns faults in windows into mappings.
//!
//! ```text
//!   load/store in a window ──▶ SIGSEGV ──▶ handler: si_addr in a registered window?
//!        ▲                                    │ yes: resolver maps the page ──▶ return
//!        └────────── the CPU retries ◀────────┘ refused (rights, no region), or
//!                                               outside every window:
//!                                               chain to the previous handler
//!                                               (Rust's stack-overflow report, or the
//!                                                default action: the process dies)
//! ```
//!
//! # What an unresolved fault does
//! | the resolver says | outcome |
//! |---|---|
//! | [`Resolution::Resolved`] | the handler returns and the CPU retries the access |
//! | [`Resolution::Refused`] (no region, rights) | chained: the process ends with `SIGSEGV`, as for any bad pointer |
//! | [`Resolution::Unserviceable`] (no frame left, no mapping left) | a message on stderr naming the address, the access and the cause, then the process ends with `SIGBUS`, as Linux ends a process whose shared file mapping cannot be served |
//! | [`Resolution::Reentered`] (window memory touched while holding the lock the resolver needs) | a message on stderr, then `abort()` (`SIGABRT`) instead of a silent deadlock |
//!
//! A fault at the access of a [probe](crate::access::probe) is the exception: whatever the
//! resolver says, the handler makes the probe return failure. Code that wants an error
//! instead of a signal goes through [`System::load`](crate::System::load) and
//! [`System::store`](crate::System::store), which probe each page and then resolve it under
//! the lock, reporting what stopped them.
//!
//! # Rules the handler keeps
//! - **It allocates nothing.** Windows live in a fixed table of [`SLOTS`] entries made of
//!   atomics; the resolver is reached through a pointer the registration keeps alive.
//! - **It takes no lock that code outside the handler holds while touching a window.** A
//!   resolver (see [`crate::HostSpace`]) takes its address space's spin lock. Code outside the
//!   handler takes that lock only around map operations (attach, detach, resolve), never while
//!   it loads or stores window memory, so a faulting thread can always get it.
//! - **It chains.** Any fault it does not resolve goes to the handler that was installed
//!   before it, exactly as if memkit were not there: Rust's stack-overflow handler still
//!   prints its message, a wild pointer still ends the process with `SIGSEGV`.
//! - **Registration is safe against concurrent faults.** A slot is retired by first marking
//!   it, then waiting until no handler is inside it, then freeing the resolver.
//!
//! # Unsafe
//! `sigaction` and the handler itself: the handler reads the `siginfo` and `ucontext` the
//! kernel passes, calls only async-signal-safe functions, and reaches a resolver through a
//! pointer its registration keeps alive: a slot is freed only after it is retired and no
//! handler is inside it (counted in the slot's `users`).

use core::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use memkit_types::{Access, VirtAddr};

/// The number of windows that can be registered at once.
pub const SLOTS: usize = 64;

/// What a resolver made of a fault (see [the table](self#what-an-unresolved-fault-does)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The page is mapped for the access: the CPU retries it.
    Resolved,
    /// The access is not allowed (no region, or beyond its rights): `SIGSEGV`.
    Refused,
    /// The access is allowed but cannot be served now: no frame is left (or no kernel
    /// mapping). The handler names the cause and ends the process with `SIGBUS`.
    Unserviceable(Unserviceable),
    /// The faulting thread holds the lock the resolver needs: waiting would deadlock. The
    /// handler says so and aborts.
    Reentered,
}

/// Why an allowed access could not be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unserviceable {
    /// No free frame (or no frame to break copy-on-write with).
    OutOfMemory,
    /// The kernel mapping could not be made (the mapping budget is spent, or `mmap` failed).
    NoMapping,
}

impl Unserviceable {
    fn describe(self) -> &'static str {
        match self {
            Unserviceable::OutOfMemory => "out of memory: no frame left to back the page",
            Unserviceable::NoMapping => "out of kernel mappings: the page could not be mapped",
        }
    }
}

impl From<bool> for Resolution {
    fn from(resolved: bool) -> Self {
        if resolved { Resolution::Resolved } else { Resolution::Refused }
    }
}

/// What resolves the faults of one window.
pub trait FaultResolver: Send + Sync + 'static {
    /// Makes `addr` accessible for `access` (by mapping the page), or says why not.
    ///
    /// Called inside a signal handler: it must not allocate, and must only take locks that no
    /// code holds while touching the window (a lock the faulting thread itself holds is
    /// reported as [`Resolution::Reentered`]).
    fn resolve_fault(&self, addr: VirtAddr, access: Access) -> Resolution;
}

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const ACTIVE: u8 = 2;
const RETIRING: u8 = 3;

type Resolver = Arc<dyn FaultResolver>;

struct Slot {
    state: AtomicU8,
    users: AtomicUsize,
    start: AtomicUsize,
    end: AtomicUsize,
    resolver: AtomicPtr<Resolver>,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            state: AtomicU8::new(FREE),
            users: AtomicUsize::new(0),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            resolver: AtomicPtr::new(core::ptr::null_mut()),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
static FAULTS_RESOLVED: AtomicU64 = AtomicU64::new(0);
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
/// Whether the handler was installed (the first attempt's outcome, for every caller).
static INSTALLED: OnceLock<Result<(), RegisterError>> = OnceLock::new();

/// The number of faults the handler resolved since the process started.
#[must_use]
pub fn faults_resolved() -> u64 {
    FAULTS_RESOLVED.load(Ordering::Relaxed)
}

/// Why a window could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// All [`SLOTS`] slots are in use.
    TableFull,
    /// The handler could not be installed (its errno).
    Os(i32),
}

impl core::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegisterError::TableFull => write!(f, "all {SLOTS} fault windows are in use"),
            RegisterError::Os(e) => write!(f, "cannot install the SIGSEGV handler: errno {e}"),
        }
    }
}

impl std::error::Error for RegisterError {}

impl RegisterError {
    /// The seed's code: `-L4_ENOMEM` (-12).
    #[must_use]
    pub fn code(self) -> i32 {
        -memkit_types::l4::L4_ENOMEM
    }
}

/// A window's registration; dropping it stops resolving faults there (waiting for any
/// fault being resolved in it right now).
#[derive(Debug)]
pub struct Registration {
    slot: usize,
}

/// Routes the faults at `start .. start + len` to `resolver`, installing the handler the
/// first time.
///
/// # Errors
/// [`RegisterError::TableFull`], [`RegisterError::Os`].
pub fn register(start: VirtAddr, len: usize, resolver: Resolver) -> Result<Registration, RegisterError> {
    install()?;
    for (i, slot) in TABLE.iter().enumerate() {
        if slot.state.compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            slot.start.store(start.as_usize(), Ordering::Relaxed);
            slot.end.store(start.as_usize().saturating_add(len), Ordering::Relaxed);
            slot.resolver.store(Box::into_raw(Box::new(resolver)), Ordering::Relaxed);
            slot.state.store(ACTIVE, Ordering::SeqCst);
            return Ok(Registration { slot: i });
        }
    }
    Err(RegisterError::TableFull)
}

impl Drop for Registration {
    fn drop(&mut self) {
        let slot = &TABLE[self.slot];
        slot.state.store(RETIRING, Ordering::SeqCst);
        while slot.users.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
        let ptr = slot.resolver.swap(core::ptr::null_mut(), Ordering::AcqRel);
        slot.state.store(FREE, Ordering::Release);
        if !ptr.is_null() {
            // SAFETY: ptr came from Box::into_raw in register(); the slot is retired and no
            // handler is inside it (users == 0 after RETIRING was published), so this is the
            // only owner.
            drop(unsafe { Box::from_raw(ptr) });
        }
    }
}

/// Resolves a fault at `addr` through the registered windows; what the handler does before
/// deciding what to do next. Allocation-free. [`Resolution::Refused`] outside every window.
fn resolve(addr: usize, access: Access) -> Resolution {
    for slot in &TABLE {
        if slot.state.load(Ordering::Acquire) != ACTIVE {
            continue;
        }
        if addr < slot.start.load(Ordering::Relaxed) || addr >= slot.end.load(Ordering::Relaxed) {
            continue;
        }
        slot.users.fetch_add(1, Ordering::SeqCst);
        let mut handled = Resolution::Refused;
        if slot.state.load(Ordering::SeqCst) == ACTIVE {
            let ptr = slot.resolver.load(Ordering::Acquire);
            if !ptr.is_null()
                && let Ok(va) = VirtAddr::try_new(addr)
            {
                // SAFETY: the slot is ACTIVE and we are counted in `users`, so the
                // registration cannot free the resolver until we leave (see Drop).
                let resolver = unsafe { &*ptr };
                handled = resolver.resolve_fault(va, access);
            }
        }
        slot.users.fetch_sub(1, Ordering::SeqCst);
        if handled == Resolution::Resolved {
            FAULTS_RESOLVED.fetch_add(1, Ordering::Relaxed);
        }
        return handled;
    }
    Resolution::Refused
}

/// Installs the handler once (every later call returns at once).
pub(crate) fn install() -> Result<(), RegisterError> {
    *INSTALLED.get_or_init(install_handler)
}

fn install_handler() -> Result<(), RegisterError> {
    let mut new = empty_sigaction();
    new.sa_sigaction = on_segv as *const () as libc::sighandler_t;
    new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    let mut old = empty_sigaction();
    // SAFETY: querying the current disposition with a null new action changes nothing.
    let rc = unsafe { libc::sigaction(libc::SIGSEGV, core::ptr::null(), &mut old) };
    if rc != 0 {
        return Err(RegisterError::Os(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
    }
    let _ = PREVIOUS.set(old);
    // SAFETY: `new` is a fully initialised action whose handler is `on_segv`, which is
    // async-signal-safe for the faults it handles and chains for every other one.
    let rc = unsafe { libc::sigaction(libc::SIGSEGV, &new, core::ptr::null_mut()) };
    if rc != 0 {
        return Err(RegisterError::Os(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
    }
    Ok(())
}

fn empty_sigaction() -> libc::sigaction {
    // SAFETY: sigaction is a plain C struct for which all-zero bytes are valid (SIG_DFL, an
    // empty mask, no flags).
    unsafe { core::mem::zeroed() }
}

/// Bit 1 of the x86_64 page-fault error code: the access was a write.
const PF_WRITE: i64 = 1 << 1;

extern "C" fn on_segv(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    if !info.is_null() && !ctx.is_null() {
        // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
        let info_ref = unsafe { &*info };
        // SAFETY: for SIGSEGV the kernel fills in si_addr.
        let addr = unsafe { info_ref.si_addr() } as usize;
        // SAFETY: the kernel passes a valid ucontext_t as the third argument, ours to change
        // (the registers it holds are restored when the handler returns).
        let uc = unsafe { &mut *ctx.cast::<libc::ucontext_t>() };
        let err = uc.uc_mcontext.gregs[libc::REG_ERR as usize];
        let access = if err & PF_WRITE != 0 { Access::Write } else { Access::Read };
        let resolution = resolve(addr, access);
        if resolution == Resolution::Resolved {
            return;
        }
        // A probe's access: make the probe return failure instead (see access::probe).
        let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize];
        if let Some(len) = crate::access::probe_fixup(rip as usize) {
            uc.uc_mcontext.gregs[libc::REG_RAX as usize] = 1;
            uc.uc_mcontext.gregs[libc::REG_RIP as usize] = rip + len as i64;
            return;
        }
        match resolution {
            Resolution::Resolved | Resolution::Refused => {}
            Resolution::Unserviceable(why) => {
                report(addr, access, why.describe());
                end_with_sigbus();
            }
            Resolution::Reentered => {
                report(
                    addr,
                    access,
                    "the faulting thread holds the lock that resolves it (window memory touched inside System::lock or HostSpace::with)",
                );
                // SAFETY: abort is async-signal-safe and ends the process.
                unsafe { libc::abort() };
            }
        }
    }
    chain(sig, info, ctx);
}

/// Writes `memkit: unresolved {access} fault at {addr}: {cause}` to stderr. Async-signal-safe:
/// formats into a stack buffer and calls `write(2)`.
fn report(addr: usize, access: Access, cause: &str) {
    let mut buf = [0u8; 256];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        let take = bytes.len().min(buf.len() - n);
        buf[n..n + take].copy_from_slice(&bytes[..take]);
        n += take;
    };
    put(b"memkit: unresolved ");
    put(if access == Access::Write { b"write" } else { b"read" });
    put(b" fault at 0x");
    let mut hex = [0u8; 16];
    for (i, h) in hex.iter_mut().enumerate() {
        let digit = (addr >> (60 - 4 * i)) & 0xf;
        *h = b"0123456789abcdef"[digit];
    }
    put(&hex);
    put(b": ");
    put(cause.as_bytes());
    put(b"\n");
    // SAFETY: write(2) is async-signal-safe; buf[..n] is initialised memory of this frame.
    let _ = unsafe { libc::write(2, buf.as_ptr().cast(), n) };
}

/// Ends the process with `SIGBUS` (the default action, whatever handler was installed).
fn end_with_sigbus() -> ! {
    let dfl = empty_sigaction();
    // SAFETY: installs SIG_DFL for SIGBUS, an always-valid disposition.
    unsafe { libc::sigaction(libc::SIGBUS, &dfl, core::ptr::null_mut()) };
    let mut set = empty_sigset();
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe { libc::sigaddset(&mut set, libc::SIGBUS) };
    // SAFETY: unblocks SIGBUS for this thread; `set` is valid.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut()) };
    // SAFETY: raise is async-signal-safe; with the default action SIGBUS ends the process.
    unsafe { libc::raise(libc::SIGBUS) };
    // SAFETY: not reached (SIGBUS's default action ends the process); _exit is
    // async-signal-safe. 128 + SIGBUS is what a shell reports for a SIGBUS death.
    unsafe { libc::_exit(128 + libc::SIGBUS) }
}

fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is a plain C bit set for which all-zero bytes are the empty set.
    unsafe { core::mem::zeroed() }
}

/// Hands the fault to the handler installed before ours, or to the default action.
fn chain(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let previous = PREVIOUS.get().map(|p| (p.sa_sigaction, p.sa_flags));
    match previous {
        Some((handler, flags)) if handler != libc::SIG_DFL && handler != libc::SIG_IGN => {
            if flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous action declared SA_SIGINFO, so its handler has the
                // three-argument signature.
                let f = unsafe {
                    core::mem::transmute::<libc::sighandler_t, extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void)>(
                        handler,
                    )
                };
                f(sig, info, ctx);
            } else {
                // SAFETY: without SA_SIGINFO the handler has the one-argument signature.
                let f = unsafe { core::mem::transmute::<libc::sighandler_t, extern "C" fn(c_int)>(handler) };
                f(sig);
            }
        }
        _ => {
            // Default (or ignored, which cannot stop a fault): restore the default action and
            // return; the access faults again and the kernel ends the process with SIGSEGV.
            let dfl = empty_sigaction();
            // SAFETY: installs SIG_DFL, an always-valid disposition.
            unsafe { libc::sigaction(sig, &dfl, core::ptr::null_mut()) };
        }
    }
}
