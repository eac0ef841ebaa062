//! The structures the C entries keep besides the layers' own, against plain models after
//! every call: DROPS's area ids (`l4rm_area_*`) and the factories' quotas
//! (`l4_factory_create_factory`, `l4re_ma_alloc_srv`, freeing slots while dataspaces are
//! still charged).

// `unsigned long` is 64 bits here and 32 on other targets: the casts to `u64` stay.
#![allow(clippy::unnecessary_cast)]

use core::ffi::c_void;
use std::collections::BTreeMap;

use memkit::errors::*;
use memkit::factory::*;
use memkit::l4re::*;
use memkit::l4re_rm::*;
use memkit::l4rm::*;
use memkit::state::{check_all_invariants, check_invariants};
use memkit::types::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum AreaOp {
    Reserve { pages: usize, flags: u32 },
    ReserveAt { near: usize, pages: usize },
    Release(usize),
    ReleaseRaw(u32),
    ReleaseAddr { which: usize, offset: usize },
    FreeArea(usize),
}

fn area_op() -> impl Strategy<Value = AreaOp> {
    let flags = prop_oneof![Just(0), Just(L4RM_LOG2_ALIGNED), Just(L4RM_LOG2_ALLOC), Just(L4RM_RESERVE_USED)];
    prop_oneof![
        3 => (1usize..40, flags).prop_map(|(pages, flags)| AreaOp::Reserve { pages, flags }),
        1 => (0usize..8, 1usize..8).prop_map(|(near, pages)| AreaOp::ReserveAt { near, pages }),
        2 => (0usize..8).prop_map(AreaOp::Release),
        1 => any::<u32>().prop_map(AreaOp::ReleaseRaw),
        1 => (0usize..8, 0usize..1 << 20).prop_map(|(which, offset)| AreaOp::ReleaseAddr { which, offset }),
        1 => (0usize..8).prop_map(AreaOp::FreeArea),
    ]
}

/// The areas the model holds, by id: start and size.
type Areas = BTreeMap<u32, (usize, usize)>;

fn listed() -> Vec<(usize, usize)> {
    let mut out = vec![l4re_rm_range_t::default(); 4096];
    // SAFETY: an array of 4096.
    let n = unsafe { l4re_rm_get_areas(0, out.as_mut_ptr(), out.len() as _) };
    assert!(n >= 0);
    out[..n as usize].iter().map(|r| (r.start as usize, (r.end - r.start + 1) as usize)).collect()
}

fn nth(m: &Areas, i: usize) -> Option<(u32, (usize, usize))> {
    m.iter().nth(i % m.len().max(1)).map(|(&k, &v)| (k, v))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn area_ids_match_the_model(ops in proptest::collection::vec(area_op(), 1..40)) {
        let mut m = Areas::new();
        let mut given = std::collections::BTreeSet::new();
        for op in ops {
            match op {
                AreaOp::Reserve { pages, flags } => {
                    let (mut at, mut id) = (0, 0);
                    // SAFETY: valid out-pointers.
                    let r = unsafe { l4rm_area_reserve((pages * 4096) as _, flags, &mut at, &mut id) };
                    prop_assert_eq!(r, 0);
                    prop_assert!(given.insert(id), "id {} given twice", id);
                    let p = (pages * 4096).next_power_of_two();
                    let size = if flags & L4RM_LOG2_ALLOC != 0 { p } else { pages * 4096 };
                    if flags & (L4RM_LOG2_ALIGNED | L4RM_LOG2_ALLOC) != 0 {
                        prop_assert_eq!(at as usize % p, 0);
                    }
                    m.insert(id, (at as usize, size));
                }
                AreaOp::ReserveAt { near, pages } => {
                    // Just above a model area: taken when the area is larger than its
                    // first page, else free unless another area is there.
                    let Some((_, (start, size))) = nth(&m, near) else { continue };
                    let at = start + 4096;
                    let taken = size > 4096 || listed().iter().any(|&(s, n)| s < at + pages * 4096 && at < s + n);
                    let mut id = 0;
                    // SAFETY: a valid out-pointer.
                    let r = unsafe { l4rm_area_reserve_region(at as _, (pages * 4096) as _, 0, &mut id) };
                    if taken {
                        prop_assert!(r < 0);
                    } else if r == 0 {
                        prop_assert!(given.insert(id));
                        m.insert(id, (at, pages * 4096));
                    }
                }
                AreaOp::Release(i) => {
                    let Some((id, _)) = nth(&m, i) else { continue };
                    prop_assert_eq!(l4rm_area_release(id), 0);
                    prop_assert_eq!(l4rm_area_release(id), -L4_EINVAL);
                    m.remove(&id);
                }
                AreaOp::ReleaseRaw(id) => {
                    let want = if m.contains_key(&id) { 0 } else { -L4_EINVAL };
                    prop_assert_eq!(l4rm_area_release(id), want);
                    m.remove(&id);
                }
                AreaOp::ReleaseAddr { which, offset } => {
                    let Some((id, (start, size))) = nth(&m, which) else { continue };
                    prop_assert_eq!(l4rm_area_release_addr((start + offset % size) as *const c_void), 0);
                    m.remove(&id);
                }
                AreaOp::FreeArea(i) => {
                    let Some((id, (start, _))) = nth(&m, i) else { continue };
                    prop_assert_eq!(l4re_rm_free_area(start as _), 0);
                    m.remove(&id);
                    prop_assert_eq!(l4rm_area_release(id), -L4_EINVAL);
                }
            }
            let l = listed();
            for (id, area) in &m {
                prop_assert!(l.contains(area), "area {} {:x?} is not listed", id, area);
            }
            check_invariants();
        }
        check_all_invariants();
        for id in m.keys() {
            prop_assert_eq!(l4rm_area_release(*id), 0);
        }
    }
}

#[derive(Debug, Clone)]
enum FactoryOp {
    Create { parent: usize, pages: u64 },
    Alloc { factory: usize, pages: i64 },
    Free(usize),
    FreeSlot(usize),
}

fn factory_op() -> impl Strategy<Value = FactoryOp> {
    prop_oneof![
        2 => (0usize..8, 0u64..64).prop_map(|(parent, pages)| FactoryOp::Create { parent, pages }),
        3 => (0usize..8, 1i64..32).prop_map(|(factory, pages)| FactoryOp::Alloc { factory, pages }),
        1 => (0usize..8).prop_map(FactoryOp::Free),
        1 => (0usize..8).prop_map(FactoryOp::FreeSlot),
    ]
}

/// A factory of the model: its slot (none once freed), parent, limit and charge.
#[derive(Debug, Clone, Copy)]
struct Fac {
    slot: Option<l4_cap_idx_t>,
    parent: Option<usize>,
    limit: u64,
    used: u64,
}

fn quota(cap: l4_cap_idx_t) -> (u64, u64) {
    let (mut limit, mut used) = (0, 0);
    // SAFETY: valid out-pointers.
    assert_eq!(unsafe { memkit_factory_quota(cap, &mut limit, &mut used) }, 0);
    (limit as u64, used as u64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn factory_quotas_match_the_model(ops in proptest::collection::vec(factory_op(), 1..40)) {
        // SAFETY: l4re_env returns a valid pointer to a static.
        let root = unsafe { (*l4re_env()).mem_alloc };
        // Index 0 is the root; its charge is counted from what it had before.
        let mut facs = vec![Fac { slot: Some(root), parent: None, limit: quota(root).0, used: quota(root).1 }];
        let start_used = facs[0].used;
        // The dataspaces: slot, factory index, charge.
        let mut dss: Vec<(l4re_ds_t, usize, u64)> = Vec::new();
        let live = |facs: &[Fac]| facs.iter().enumerate().filter(|(_, f)| f.slot.is_some()).map(|(i, _)| i).collect::<Vec<_>>();
        for op in ops {
            let alive = live(&facs);
            match op {
                FactoryOp::Create { parent, pages } => {
                    let p = alive[parent % alive.len()];
                    let slot = l4re_util_cap_alloc();
                    let limit = pages * 4096;
                    let r = l4_error(l4_factory_create_factory(facs[p].slot.unwrap(), slot, limit as _));
                    if facs[p].limit - facs[p].used >= limit {
                        prop_assert_eq!(r, 0);
                        facs[p].used += limit;
                        facs.push(Fac { slot: Some(slot), parent: Some(p), limit, used: 0 });
                    } else {
                        prop_assert_eq!(r, -(L4_ENOMEM as i64));
                        l4re_util_cap_free(slot);
                    }
                }
                FactoryOp::Alloc { factory, pages } => {
                    let f = alive[factory % alive.len()];
                    let slot = l4re_util_cap_alloc();
                    let bytes = pages as u64 * 4096;
                    let r = l4re_ma_alloc_srv(facs[f].slot.unwrap(), (bytes - 100) as _, slot, 0);
                    if facs[f].limit - facs[f].used >= bytes {
                        prop_assert_eq!(r, 0);
                        facs[f].used += bytes;
                        dss.push((slot, f, bytes));
                    } else {
                        prop_assert_eq!(r, -(L4_ENOMEM as i64));
                        l4re_util_cap_free(slot);
                    }
                }
                FactoryOp::Free(i) => {
                    if dss.is_empty() { continue }
                    let (slot, f, bytes) = dss.remove(i % dss.len());
                    match facs[f].slot {
                        Some(srv) => prop_assert_eq!(l4re_ma_free_srv(srv, slot), 0),
                        None => prop_assert_eq!(l4re_ma_free_srv(root, slot), -(L4_EINVAL as i64)),
                    }
                    l4re_util_cap_free(slot);
                    facs[f].used -= bytes;
                }
                FactoryOp::FreeSlot(i) => {
                    if alive.len() < 2 { continue }
                    let f = alive[1 + i % (alive.len() - 1)];
                    l4re_util_cap_free(facs[f].slot.unwrap());
                    facs[f].slot = None;
                }
            }
            // Orphans with nothing charged are destroyed, their limit given back.
            loop {
                let gone: Vec<usize> = (1..facs.len()).filter(|&i| facs[i].slot.is_none() && facs[i].used == 0 && facs[i].limit != u64::MAX).collect();
                if gone.is_empty() { break }
                for i in gone {
                    let p = facs[i].parent.unwrap();
                    facs[p].used -= facs[i].limit;
                    facs[i].limit = u64::MAX; // destroyed
                }
            }
            for f in &facs {
                if let Some(slot) = f.slot {
                    prop_assert_eq!(quota(slot), (f.limit, f.used));
                }
            }
            check_invariants();
        }
        check_all_invariants();
        // Everything given back: the root's charge is what it was.
        for (slot, f, _) in dss {
            if let Some(srv) = facs[f].slot { prop_assert_eq!(l4re_ma_free_srv(srv, slot), 0) }
            l4re_util_cap_free(slot);
        }
        for f in facs.iter().skip(1) {
            if let Some(slot) = f.slot { l4re_util_cap_free(slot) }
        }
        let _ = memkit::state::memkit_init();
        prop_assert_eq!(quota(root).1, start_used);
    }
}
