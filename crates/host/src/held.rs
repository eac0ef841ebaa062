//! Which fault-resolving locks the current thread holds.
//!
//! A thread that holds the lock a fault resolver needs and then faults in that resolver's
//! window would wait for itself forever inside the signal handler. The lock holders record
//! themselves here, per thread, so that the API can refuse such a use and the handler can
//! end the process with a message instead of deadlocking. The record is a plain `Cell` of
//! words (no allocation, no destructor), which the handler may read.

use core::cell::Cell;

/// How many such locks one thread can be recorded as holding at once; a thread holding more
/// is not checked for the extra ones.
const HELD_MAX: usize = 8;

thread_local! {
    static HELD: Cell<[usize; HELD_MAX]> = const { Cell::new([0; HELD_MAX]) };
}

/// Whether this thread holds the lock whose key (its address) is `key`.
pub(crate) fn holds(key: usize) -> bool {
    HELD.try_with(|h| h.get().contains(&key)).unwrap_or(false)
}

/// The record that this thread holds the lock `key`, for as long as the value lives.
#[derive(Debug)]
pub(crate) struct Held {
    /// The entry recording the lock (none when [`HELD_MAX`] are recorded already).
    slot: Option<usize>,
}

impl Held {
    /// Records that this thread holds the lock `key` (a non-zero address).
    pub(crate) fn new(key: usize) -> Self {
        let slot = HELD
            .try_with(|h| {
                let mut held = h.get();
                let slot = held.iter().position(|&k| k == 0)?;
                held[slot] = key;
                h.set(held);
                Some(slot)
            })
            .ok()
            .flatten();
        Held { slot }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let _ = HELD.try_with(|h| {
                let mut held = h.get();
                held[slot] = 0;
                h.set(held);
            });
        }
    }
}
