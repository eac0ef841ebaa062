//! Several threads at once: each allocates dataspaces, attaches them, stores and loads
//! through the regions (real page faults, served while other threads hold memkit's lock),
//! copies, detaches and frees, and allocates from the kernel heaps.

use core::ffi::c_void;
use core::ptr::null_mut;

use memkit::l4re::*;
use memkit::l4re_rm::*;
use memkit::state::check_all_invariants;
use memkit::xmalloc::*;

fn worker(seed: u8) {
    for round in 0..20u8 {
        let ds = l4re_util_cap_alloc();
        assert_eq!(l4re_ma_alloc(5 * 4096 + 3, ds, 0), 0);
        let mut start: *mut c_void = null_mut();
        // SAFETY: a valid in/out pointer.
        let r = unsafe { l4re_rm_attach(&mut start, 6 * 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, ds, 0, 12) };
        assert_eq!(r, 0);
        let p = start.cast::<u8>();
        let v = seed.wrapping_mul(31).wrapping_add(round);
        for i in (0..5 * 4096 + 3).step_by(511) {
            // SAFETY: inside the region just attached read/write (its pages fault in).
            unsafe { p.wrapping_add(i).write(v ^ i as u8) };
        }
        let copy = l4re_util_cap_alloc();
        assert_eq!(l4re_ma_alloc(5 * 4096 + 3, copy, 0), 0);
        assert_eq!(l4re_ds_copy_in(copy, 0, ds, 0, 5 * 4096 + 3), 0);
        let mut view: *mut c_void = null_mut();
        // SAFETY: a valid in/out pointer.
        let r = unsafe { l4re_rm_attach(&mut view, 6 * 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_R, copy, 0, 12) };
        assert_eq!(r, 0);
        let q = view.cast::<u8>();
        for i in (0..5 * 4096 + 3).step_by(511) {
            // SAFETY: inside the region just attached readable.
            assert_eq!(unsafe { q.wrapping_add(i).read() }, v ^ i as u8);
        }
        let b = xmalloc(100 + i32::from(round), 4, if round % 2 == 0 { kernel_heap } else { pinned_heap });
        assert!(!b.0.is_null());
        assert_eq!(xmfree(b, if round % 2 == 0 { kernel_heap } else { pinned_heap }), 0);
        assert_eq!(l4re_rm_detach(start), L4RE_RM_DETACHED_DS);
        assert_eq!(l4re_rm_detach(view), L4RE_RM_DETACHED_DS);
        l4re_util_cap_free(ds);
        l4re_util_cap_free(copy);
    }
}

#[test]
fn threads_share_the_system() {
    let handles: Vec<_> = (0..4u8).map(|t| std::thread::spawn(move || worker(t))).collect();
    for h in handles {
        h.join().expect("a worker finished");
    }
    check_all_invariants();
}
