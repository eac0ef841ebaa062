//! `include/memkit.h` is what cbindgen makes of the crate now: regenerates it and fails when
//! the checked-in file differs (`MEMKIT_BLESS=1` writes it instead).

use std::path::PathBuf;

#[test]
fn header_is_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml reads");
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let fresh = String::from_utf8(fresh).expect("the header is UTF-8");
    let path = dir.join("include/memkit.h");
    if std::env::var_os("MEMKIT_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("include/memkit.h is written");
        return;
    }
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        old == fresh,
        "include/memkit.h is stale: run `MEMKIT_BLESS=1 cargo test -p memkit-capi --test header -- header_is_current` and commit it"
    );
}

#[test]
fn header_has_the_seeds_names_and_constants() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let h = std::fs::read_to_string(dir.join("include/memkit.h")).expect("the header is there");
    for name in [
        "pmallocator_get_header(",
        "pmallocator_init_region(",
        "pmallocator_allocate(",
        "pmallocator_free(",
        "ERR_PHYSICAL_MEMORY_FULL",
        "xmalloc(",
        "xmfree(",
        "init_heap(",
        "pin(",
        "unpin(",
        "kernel_heap;",
        "pinned_heap;",
        "pinned_heap_16M;",
        "l4dm_mem_open(",
        "l4dm_mem_resize(",
        "l4dm_mem_size(",
        "l4dm_mem_info(",
        "l4dm_mem_phys_addr(",
        "l4dm_close(",
        "l4dm_close_all(",
        "l4dm_copy(",
        "l4dm_copy_long(",
        "l4dm_memphys_open(",
        "l4dm_memphys_copy(",
        "l4dm_memphys_find_dmphys(",
        "l4rm_attach(",
        "l4rm_detach(",
        "l4rm_attach_to_region(",
        "l4rm_area_reserve(",
        "l4rm_area_reserve_region(",
        "l4rm_area_release(",
        "l4rm_area_release_addr(",
        "l4rm_area_attach(",
        "l4rm_area_attach_to_region(",
        "L4RM_RESERVE_USED",
        "l4dm_share(",
        "l4_factory_create_factory(",
        "l4_error(",
        "l4re_env(",
        "l4re_ma_alloc_srv(",
        "l4re_ma_alloc_align_srv(",
        "l4re_ma_free_srv(",
        "l4re_rm_get_regions(",
        "l4re_rm_get_areas(",
        "l4re_rm_show_lists(",
        "L4DM_COW 1024",
        "L4DM_MEMPHYS_ANY_ADDR -1",
        "L4RM_MAP",
        "l4re_ma_alloc(",
        "l4re_ma_alloc_align(",
        "l4re_ma_free(",
        "l4re_ds_size(",
        "l4re_ds_phys(",
        "l4re_ds_copy_in(",
        "l4re_rm_attach(",
        "l4re_rm_detach(",
        "l4re_rm_find(",
        "l4re_rm_reserve_area(",
        "l4re_rm_free_area(",
        "L4RE_RM_F_SEARCH_ADDR",
        "L4_ENOMEM 12",
        "L4_EINVAL 22",
        "L4_ERANGE 34",
    ] {
        assert!(h.contains(name), "the header lacks {name}");
    }
}
