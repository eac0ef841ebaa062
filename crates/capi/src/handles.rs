//! The process's capability slots (`l4re_util_cap_alloc`): the integer handles of L4Re's C
//! bindings. A slot is free, allocated and empty, or holds an object: a dataspace or a
//! factory (a memory allocator with a quota, `l4_factory_create_factory`).
//!
//! A handle is `(slot + 1) << L4_CAP_SHIFT`, as L4 capability indices are; every other
//! value, a free slot's handle and [`L4_INVALID_CAP`](crate::types::L4_INVALID_CAP) are
//! refused. Freed slots are reused lowest first, as L4Re's slot allocator does.

use memkit_dataspace::{DataspaceId, FactoryId};

use crate::types::{L4_CAP_SHIFT, l4_cap_idx_t};

/// What an allocated slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Object {
    /// A dataspace (its id carries the handle's rights).
    Ds(DataspaceId),
    /// A factory: a memory allocator with its quota.
    Factory(FactoryId),
}

/// One slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Not allocated.
    Free,
    /// Allocated: empty, or holding an object.
    Held(Option<Object>),
}

/// Why a handle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CapError {
    /// The value names no allocated slot.
    BadHandle,
    /// Every slot is taken.
    Full,
}

/// The capability slots of the process.
#[derive(Debug, Default)]
pub(crate) struct CapTable {
    slots: Vec<Slot>,
    /// The free slots' numbers.
    free: std::collections::BTreeSet<usize>,
}

impl CapTable {
    /// The most slots a process may hold.
    pub(crate) const MAX_SLOTS: usize = 1 << 16;

    /// No slot yet.
    #[must_use]
    pub(crate) fn new() -> Self {
        CapTable::default()
    }

    fn index(cap: l4_cap_idx_t) -> Option<usize> {
        if cap & ((1 << L4_CAP_SHIFT) - 1) != 0 {
            return None;
        }
        let n = usize::try_from(cap >> L4_CAP_SHIFT).ok()?;
        n.checked_sub(1)
    }

    fn cap(index: usize) -> l4_cap_idx_t {
        ((index as l4_cap_idx_t) + 1) << L4_CAP_SHIFT
    }

    fn slot(&self, cap: l4_cap_idx_t) -> Result<usize, CapError> {
        let i = Self::index(cap).ok_or(CapError::BadHandle)?;
        match self.slots.get(i) {
            Some(Slot::Held(_)) => Ok(i),
            _ => Err(CapError::BadHandle),
        }
    }

    /// Allocates an empty slot, the lowest free one.
    ///
    /// # Errors
    /// [`CapError::Full`] when [`MAX_SLOTS`](Self::MAX_SLOTS) are allocated.
    pub(crate) fn alloc(&mut self) -> Result<l4_cap_idx_t, CapError> {
        let i = match self.free.pop_first() {
            Some(i) => i,
            None if self.slots.len() < Self::MAX_SLOTS => {
                self.slots.push(Slot::Free);
                self.slots.len() - 1
            }
            None => return Err(CapError::Full),
        };
        self.slots[i] = Slot::Held(None);
        Ok(Self::cap(i))
    }

    /// Frees the slot `cap`, returning the object it held.
    ///
    /// # Errors
    /// [`CapError::BadHandle`].
    pub(crate) fn free(&mut self, cap: l4_cap_idx_t) -> Result<Option<Object>, CapError> {
        let i = self.slot(cap)?;
        let old = core::mem::replace(&mut self.slots[i], Slot::Free);
        self.free.insert(i);
        Ok(match old {
            Slot::Held(o) => o,
            Slot::Free => None,
        })
    }

    /// The object slot `cap` holds (`None`: an empty slot).
    ///
    /// # Errors
    /// [`CapError::BadHandle`].
    pub(crate) fn get(&self, cap: l4_cap_idx_t) -> Result<Option<Object>, CapError> {
        let i = self.slot(cap)?;
        Ok(match self.slots[i] {
            Slot::Held(o) => o,
            Slot::Free => None,
        })
    }

    /// Puts `object` into slot `cap`, returning what it held before.
    ///
    /// # Errors
    /// [`CapError::BadHandle`].
    pub(crate) fn set(&mut self, cap: l4_cap_idx_t, object: Option<Object>) -> Result<Option<Object>, CapError> {
        let i = self.slot(cap)?;
        let old = core::mem::replace(&mut self.slots[i], Slot::Held(object));
        Ok(match old {
            Slot::Held(o) => o,
            Slot::Free => None,
        })
    }

    /// The lowest slot holding `ds` (the same dataspace, whatever the rights).
    #[must_use]
    pub(crate) fn find(&self, ds: DataspaceId) -> Option<l4_cap_idx_t> {
        self.slots.iter().position(|s| matches!(s, Slot::Held(Some(Object::Ds(d))) if *d == ds)).map(Self::cap)
    }

    /// The allocated slots.
    #[must_use]
    pub(crate) fn allocated(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Checks that the free set names exactly the free slots.
    #[cfg(any(test, feature = "check"))]
    ///
    /// # Panics
    /// When it does not.
    pub(crate) fn check_invariants(&self) {
        assert!(self.slots.len() <= Self::MAX_SLOTS);
        for (i, s) in self.slots.iter().enumerate() {
            assert_eq!(*s == Slot::Free, self.free.contains(&i), "slot {i}: {s:?} and the free set disagree");
        }
        assert!(self.free.iter().all(|&i| i < self.slots.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::L4_INVALID_CAP;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Alloc,
        Free(usize),
        Set(usize, Option<Object>),
        Get(usize),
        Find(u64),
        Raw(u64),
    }

    fn object() -> impl Strategy<Value = Object> {
        prop_oneof![
            (0u64..4).prop_map(|d| Object::Ds(DataspaceId::from_u64(d))),
            Just(Object::Factory(FactoryId::ROOT)),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Alloc),
            (0usize..12).prop_map(Op::Free),
            ((0usize..12), proptest::option::of(object())).prop_map(|(i, o)| Op::Set(i, o)),
            (0usize..12).prop_map(Op::Get),
            (0u64..4).prop_map(Op::Find),
            any::<u64>().prop_map(Op::Raw),
        ]
    }

    /// The model: a map from allocated slot number to its content; allocation takes the
    /// lowest number not in the map.
    fn model_alloc(m: &BTreeMap<usize, Option<Object>>) -> usize {
        (0..).find(|i| !m.contains_key(i)).unwrap_or(0)
    }

    proptest! {
        #[test]
        fn cap_table_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
            let mut t = CapTable::new();
            let mut m: BTreeMap<usize, Option<Object>> = BTreeMap::new();
            let cap = |i: usize| ((i as l4_cap_idx_t) + 1) << L4_CAP_SHIFT;
            for o in ops {
                match o {
                    Op::Alloc => {
                        let i = model_alloc(&m);
                        prop_assert_eq!(t.alloc(), Ok(cap(i)));
                        m.insert(i, None);
                    }
                    Op::Free(i) => {
                        let want = match m.remove(&i) {
                            Some(d) => Ok(d),
                            None => Err(CapError::BadHandle),
                        };
                        prop_assert_eq!(t.free(cap(i)), want);
                    }
                    Op::Set(i, o) => {
                        let got = t.set(cap(i), o);
                        match m.get_mut(&i) {
                            Some(slot) => prop_assert_eq!(got, Ok(core::mem::replace(slot, o))),
                            None => prop_assert_eq!(got, Err(CapError::BadHandle)),
                        }
                    }
                    Op::Get(i) => {
                        let want = m.get(&i).copied().ok_or(CapError::BadHandle);
                        prop_assert_eq!(t.get(cap(i)), want);
                    }
                    Op::Find(d) => {
                        let ds = Object::Ds(DataspaceId::from_u64(d));
                        let want = m.iter().find(|(_, o)| **o == Some(ds)).map(|(&i, _)| cap(i));
                        prop_assert_eq!(t.find(DataspaceId::from_u64(d)), want);
                    }
                    Op::Raw(v) => {
                        let v = v as l4_cap_idx_t;
                        let valid = CapTable::index(v).is_some_and(|i| m.contains_key(&i));
                        prop_assert_eq!(t.get(v).is_ok(), valid);
                    }
                }
                t.check_invariants();
                prop_assert_eq!(t.allocated(), m.len());
            }
        }
    }

    #[test]
    fn invalid_values_are_refused() {
        let mut t = CapTable::new();
        let c = t.alloc().unwrap();
        for bad in [0, L4_INVALID_CAP, c + 1, c | 0x800, l4_cap_idx_t::MAX, c << 1] {
            assert_eq!(t.get(bad), Err(CapError::BadHandle), "{bad:#x}");
        }
        assert_eq!(t.free(c), Ok(None));
        assert_eq!(t.free(c), Err(CapError::BadHandle), "double free");
        t.check_invariants();
    }
}
