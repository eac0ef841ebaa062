//! A roomy alternate signal stack for every thread that touches window memory.
//!
//! The fault handler runs with `SA_ONSTACK`, on the thread's alternate signal stack. The one
//! Rust's runtime installs is a few KiB, enough for its stack-overflow report but not for a
//! region-map lookup and a dataspace fault in an unoptimised build. [`prepare_thread`] gives
//! the calling thread a [`ALT_STACK_SIZE`] stack (with a guard page below it) once; the
//! access functions call it, so a thread is ready before its first fault. The previous
//! alternate stack is put back when the thread ends.
//!
//! # Unsafe
//! `sigaltstack`, `mmap` and `munmap` on a reservation each thread makes for itself: the stack
//! stays mapped while it is the thread's alternate stack, and is unmapped only after it has
//! been uninstalled, when no signal can run on it.

use core::cell::Cell;
use core::ffi::c_void;

/// The size of the alternate signal stack the runtime installs.
pub const ALT_STACK_SIZE: usize = 256 * 1024;

struct AltStack {
    /// The mapping (guard page + stack), or null when the thread's stack was big enough.
    base: Cell<*mut c_void>,
    previous: Cell<Option<libc::stack_t>>,
    ready: Cell<bool>,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let base = self.base.get();
        if base.is_null() {
            return;
        }
        let mut current = empty_stack();
        // SAFETY: querying the alternate stack with a null new value changes nothing.
        let rc = unsafe { libc::sigaltstack(core::ptr::null(), &mut current) };
        if rc == 0 && current.ss_sp == base.wrapping_byte_add(page_size()) {
            let previous = self.previous.get().unwrap_or_else(disabled_stack);
            // SAFETY: puts back the stack that was installed before ours (still mapped: its
            // owner frees it after us) or disables the alternate stack.
            unsafe { libc::sigaltstack(&previous, core::ptr::null_mut()) };
        }
        // SAFETY: the mapping made in prepare_thread; no signal runs on it any more (it is no
        // longer this thread's alternate stack, and no other thread uses it).
        unsafe { libc::munmap(base, ALT_STACK_SIZE + page_size()) };
    }
}

thread_local! {
    static ALT: AltStack = const {
        AltStack { base: Cell::new(core::ptr::null_mut()), previous: Cell::new(None), ready: Cell::new(false) }
    };
}

fn page_size() -> usize {
    rustix::param::page_size()
}

fn empty_stack() -> libc::stack_t {
    libc::stack_t { ss_sp: core::ptr::null_mut(), ss_flags: 0, ss_size: 0 }
}

fn disabled_stack() -> libc::stack_t {
    libc::stack_t { ss_sp: core::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 }
}

/// Makes sure the calling thread has an alternate signal stack of at least
/// [`ALT_STACK_SIZE`] bytes. Cheap after the first call on a thread.
pub fn prepare_thread() {
    let _ = ALT.try_with(|alt| {
        if !alt.ready.replace(true) {
            install(alt);
        }
    });
}

fn install(alt: &AltStack) {
    let mut current = empty_stack();
    // SAFETY: querying the alternate stack with a null new value changes nothing.
    if unsafe { libc::sigaltstack(core::ptr::null(), &mut current) } != 0 {
        return;
    }
    if current.ss_flags & libc::SS_DISABLE == 0 && current.ss_size >= ALT_STACK_SIZE {
        return;
    }
    if current.ss_flags & libc::SS_ONSTACK != 0 {
        return; // running on it right now: never replace it
    }
    let page = page_size();
    let Ok(base) = crate::sys::reserve(ALT_STACK_SIZE + page) else { return };
    let stack = base.wrapping_byte_add(page);
    // SAFETY: the stack part of our own fresh reservation becomes read-write; the first page
    // stays PROT_NONE as a guard.
    let rw = unsafe {
        crate::sys::protect(stack, ALT_STACK_SIZE, rustix::mm::MprotectFlags::READ | rustix::mm::MprotectFlags::WRITE)
    };
    let new = libc::stack_t { ss_sp: stack, ss_flags: 0, ss_size: ALT_STACK_SIZE };
    // SAFETY: `new` describes a live read-write mapping owned by this thread's AltStack, which
    // outlives every signal on this thread (its Drop uninstalls it first).
    if rw.is_err() || unsafe { libc::sigaltstack(&new, core::ptr::null_mut()) } != 0 {
        // SAFETY: our own reservation, never installed.
        unsafe { crate::sys::release(base, ALT_STACK_SIZE + page) };
        return;
    }
    alt.base.set(base);
    alt.previous.set(if current.ss_flags & libc::SS_DISABLE == 0 { Some(current) } else { None });
}
