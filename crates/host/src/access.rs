//! Real loads and stores into window memory.
//!
//! These are the accesses that fault: each one is a volatile access the compiler keeps and
//! does not merge, so a test or a scenario touches exactly the bytes it names, and a page
//! that is not mapped yet goes through the fault handler.
//!
//! # Probes
//! [`probe`] touches one byte with a real access whose fault, when the handler cannot serve
//! it, does not end the process: the handler knows the probe's instruction and makes it
//! return failure instead (the fix-up Linux's `copy_from_user` gets from its exception
//! table). [`System`](crate::System) probes each page before it copies, so the first touch
//! of a page is a real fault even through its error-returning API.
//!
//! # Unsafe
//! Every access is a raw volatile load or store of window memory, which no Rust reference
//! covers: a fault there is resolved by the handler (or ends the process, or fails a probe),
//! never undefined behaviour. The functions are `unsafe fn`: their callers promise that the
//! address lies in a registered window, or accept the end of the process.

use memkit_types::VirtAddr;

/// Loads the byte at `addr`.
///
/// # Safety
/// `addr` lies in a window registered with a resolver, or the caller accepts that the process
/// ends with `SIGSEGV` (an access the resolver refuses).
#[must_use]
pub unsafe fn load_u8(addr: VirtAddr) -> u8 {
    crate::altstack::prepare_thread();
    // SAFETY: the caller guarantees addr is window memory, which no Rust reference covers; a
    // fault is resolved by the handler or ends the process, never undefined behaviour.
    unsafe { (addr.as_usize() as *const u8).read_volatile() }
}

/// Stores `value` at `addr`.
///
/// # Safety
/// As for [`load_u8`].
pub unsafe fn store_u8(addr: VirtAddr, value: u8) {
    crate::altstack::prepare_thread();
    // SAFETY: as for load_u8.
    unsafe { (addr.as_usize() as *mut u8).write_volatile(value) }
}

/// Loads `buf.len()` bytes from `addr` on, one volatile load each.
///
/// # Safety
/// As for [`load_u8`], for every byte of the range.
pub unsafe fn load_bytes(addr: VirtAddr, buf: &mut [u8]) {
    crate::altstack::prepare_thread();
    let src = addr.as_usize() as *const u8;
    for (i, b) in buf.iter_mut().enumerate() {
        // SAFETY: as for load_u8; src + i is a byte of the caller's range.
        *b = unsafe { src.wrapping_add(i).read_volatile() };
    }
}

/// Stores `buf` from `addr` on, one volatile store each.
///
/// # Safety
/// As for [`load_u8`], for every byte of the range.
pub unsafe fn store_bytes(addr: VirtAddr, buf: &[u8]) {
    crate::altstack::prepare_thread();
    let dst = addr.as_usize() as *mut u8;
    for (i, &b) in buf.iter().enumerate() {
        // SAFETY: as for load_u8; dst + i is a byte of the caller's range.
        unsafe { dst.wrapping_add(i).write_volatile(b) };
    }
}

/// Loads the 8-byte little-endian word at `addr` (any alignment).
///
/// # Safety
/// As for [`load_u8`].
#[must_use]
pub unsafe fn load_u64(addr: VirtAddr) -> u64 {
    crate::altstack::prepare_thread();
    // SAFETY: as for load_u8; read_unaligned tolerates any alignment.
    unsafe { (addr.as_usize() as *const u64).read_unaligned() }
}

/// Stores the 8-byte word `value` at `addr` (any alignment).
///
/// # Safety
/// As for [`load_u8`].
pub unsafe fn store_u64(addr: VirtAddr, value: u64) {
    crate::altstack::prepare_thread();
    // SAFETY: as for load_u8; write_unaligned tolerates any alignment.
    unsafe { (addr.as_usize() as *mut u64).write_unaligned(value) }
}

/// Atomically adds `value` to the 8-byte word at `addr` (8-byte aligned) and returns the old
/// value.
///
/// # Safety
/// As for [`load_u8`], and `addr` is 8-byte aligned.
pub unsafe fn fetch_add_u64(addr: VirtAddr, value: u64) -> u64 {
    crate::altstack::prepare_thread();
    // SAFETY: the caller guarantees an aligned address in window memory, which only atomic or
    // volatile raw accesses reach, so treating it as an AtomicU64 for one access is sound.
    let word = unsafe { core::sync::atomic::AtomicU64::from_ptr(addr.as_usize() as *mut u64) };
    word.fetch_add(value, core::sync::atomic::Ordering::SeqCst)
}

/// Touches the byte at `addr` with a real access of kind `write` (an atomic `or` of zero, so
/// that it changes nothing even with concurrent writers) or a load, and returns whether the
/// access succeeded. A fault is resolved by the handler as usual; one that cannot be served
/// (no window, no region, the rights, no frame left, the lock held) makes the probe return
/// `false` instead of ending the process.
///
/// # Safety
/// `addr` is window memory or unmapped: no Rust reference covers it (a successful write
/// probe is an atomic access that changes no byte).
#[must_use]
pub unsafe fn probe(addr: VirtAddr, write: bool) -> bool {
    // Without the handler a failing probe would end the process.
    if crate::fault::install().is_err() {
        return false;
    }
    crate::altstack::prepare_thread();
    let failed = if write {
        // SAFETY: the caller guarantees no reference covers addr; a fault at the probe's
        // instruction is resolved or fixed up by the handler (probe_fixup).
        unsafe { probe_write(addr.as_usize()) }
    } else {
        // SAFETY: as above.
        unsafe { probe_read(addr.as_usize()) }
    };
    failed == 0
}

// The probes: eax = 0, the access, return. The handler fixes a fault at the access up by
// setting eax = 1 and skipping the access (`probe_fixup` knows its length).
#[unsafe(naked)]
unsafe extern "sysv64" fn probe_read(_addr: usize) -> u32 {
    core::arch::naked_asm!("xor eax, eax", "movzx ecx, byte ptr [rdi]", "ret")
}

#[unsafe(naked)]
unsafe extern "sysv64" fn probe_write(_addr: usize) -> u32 {
    core::arch::naked_asm!("xor eax, eax", "lock or byte ptr [rdi], 0", "ret")
}

/// The encodings of the probes: `xor eax, eax` (2 bytes), then the access.
const PROBE_READ: [u8; 6] = [0x31, 0xc0, 0x0f, 0xb6, 0x0f, 0xc3];
const PROBE_WRITE: [u8; 7] = [0x31, 0xc0, 0xf0, 0x80, 0x0f, 0x00, 0xc3];

/// The length of the probe access at instruction address `rip`, if it is one: the handler
/// then fixes the fault up (eax = 1, rip += length) instead of ending the process.
pub(crate) fn probe_fixup(rip: usize) -> Option<usize> {
    if rip == probe_read as *const () as usize + 2 {
        Some(PROBE_READ.len() - 3)
    } else if rip == probe_write as *const () as usize + 2 {
        Some(PROBE_WRITE.len() - 3)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(f: *const (), len: usize) -> Vec<u8> {
        // SAFETY: reads the first bytes of a function's machine code (readable text).
        (0..len).map(|i| unsafe { f.cast::<u8>().wrapping_add(i).read_volatile() }).collect()
    }

    #[test]
    fn the_probes_are_encoded_as_the_fixup_expects() {
        assert_eq!(code(probe_read as *const (), PROBE_READ.len()), PROBE_READ);
        assert_eq!(code(probe_write as *const (), PROBE_WRITE.len()), PROBE_WRITE);
    }

    #[test]
    fn a_probe_of_an_unmapped_address_returns_false() {
        let window = crate::Window::new(1 << 16).unwrap();
        // SAFETY: the window is reserved PROT_NONE, no reference covers it.
        assert!(!unsafe { probe(window.start(), false) });
        // SAFETY: as above.
        assert!(!unsafe { probe(window.start(), true) });
        let mut x = 5u8;
        // SAFETY: deliberately a probe of ordinary memory, which changes nothing; no
        // reference to x is live across it.
        assert!(unsafe { probe(VirtAddr::new(&raw mut x as usize), true) });
        assert_eq!(x, 5);
    }
}
