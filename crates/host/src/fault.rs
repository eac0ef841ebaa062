//! The process-wide `SIGSEGV` handler that turns faults in windows into mappings.
//!
//! ```text
//!   load/store in a window ──▶ SIGSEGV ──▶ handler: si_addr in a registered window?
//!        ▲                                    │ yes: resolver maps the page ──▶ return
//!        └────────── the CPU retries ◀────────┘ no, or not resolvable:
//!                                               chain to the previous handler
//!                                               (Rust's stack-overflow report, or the
//!                                                default action: the process dies)
//! ```
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

use core::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once, OnceLock};

use memkit_types::{Access, VirtAddr};

/// The number of windows that can be registered at once.
pub const SLOTS: usize = 64;

/// What resolves the faults of one window.
pub trait FaultResolver: Send + Sync + 'static {
    /// Makes `addr` accessible for `access` (by mapping the page), and returns whether it did.
    /// `false` lets the fault go on to the previous handler: the process dies.
    ///
    /// Called inside a signal handler: it must not allocate, and must only take locks that no
    /// code holds while touching the window.
    fn resolve_fault(&self, addr: VirtAddr, access: Access) -> bool;
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
static INSTALL: Once = Once::new();

/// The number of faults the handler resolved since the process started.
#[must_use]
pub fn faults_resolved() -> u64 {
    FAULTS_RESOLVED.load(Ordering::Relaxed)
}

/// Why a window could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        -12
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
/// deciding to chain. Allocation-free.
fn resolve(addr: usize, access: Access) -> bool {
    for slot in &TABLE {
        if slot.state.load(Ordering::Acquire) != ACTIVE {
            continue;
        }
        if addr < slot.start.load(Ordering::Relaxed) || addr >= slot.end.load(Ordering::Relaxed) {
            continue;
        }
        slot.users.fetch_add(1, Ordering::SeqCst);
        let mut handled = false;
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
        if handled {
            FAULTS_RESOLVED.fetch_add(1, Ordering::Relaxed);
        }
        return handled;
    }
    false
}

fn install() -> Result<(), RegisterError> {
    let mut result = Ok(());
    INSTALL.call_once(|| result = install_handler());
    result
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
        // SAFETY: the kernel passes a valid ucontext_t as the third argument.
        let uc = unsafe { &*ctx.cast::<libc::ucontext_t>() };
        let err = uc.uc_mcontext.gregs[libc::REG_ERR as usize];
        let access = if err & PF_WRITE != 0 { Access::Write } else { Access::Read };
        if resolve(addr, access) {
            return;
        }
    }
    chain(sig, info, ctx);
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
