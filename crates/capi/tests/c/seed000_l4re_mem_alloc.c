/* Seed 000: L4Re's Mem_alloc and Dataspace through L4Re's C bindings' names. */
#include <memkit.h>
#include <string.h>
#include "check.h"

int main(void) {
  CHECK(memkit_init() == 0);
  l4re_ds_t ds = l4re_util_cap_alloc();
  CHECK(!(ds & L4_INVALID_CAP));
  CHECK(l4re_ma_alloc(10000, ds, 0) == 0);
  CHECK(l4re_ds_size(ds) == 10000);
  CHECK(l4re_ds_flags(ds) == L4RE_DS_F_RWX);
  l4re_ds_stats_t st;
  CHECK(l4re_ds_info(ds, &st) == 0 && st.size == 10000 && st.flags == L4RE_DS_F_RWX);
  CHECK(l4re_ma_alloc(100, ds, 0) == -L4_EBUSY);

  /* Contiguous, pinned, 4 MiB aligned: its physical address is aligned too. */
  l4re_ds_t big = l4re_util_cap_alloc();
  CHECK(l4re_ma_alloc_align(4 << 20, big, L4RE_MA_CONTINUOUS | L4RE_MA_PINNED, 22) == 0);
  l4_addr_t pa;
  l4_size_t ps;
  CHECK(l4re_ds_phys(big, 0, &pa, &ps) == 0);
  CHECK(pa % (4 << 20) == 0 && ps == (4u << 20));
  CHECK(l4re_ds_phys(big, 4096 + 8, &pa, &ps) == 0 && ps == (4u << 20) - 4096 - 8);
  CHECK(l4re_ds_phys(big, 4 << 20, &pa, &ps) < 0);
  CHECK(l4re_ds_phys(big, 0, NULL, &ps) == -L4_EINVAL);
  l4re_ds_t sp = l4re_util_cap_alloc();
  CHECK(l4re_ma_alloc(3 << 20, sp, L4RE_MA_SUPER_PAGES | L4RE_MA_PINNED) == 0);
  CHECK(l4re_ds_phys(sp, 0, &pa, &ps) == 0 && pa % (2 << 20) == 0);

  /* Lazy memory: not resident until touched or allocated. */
  CHECK(l4re_ds_phys(ds, 0, &pa, &ps) < 0);
  CHECK(l4re_ds_allocate(ds, 0, 8192) == 0);
  CHECK(l4re_ds_phys(ds, 0, &pa, &ps) == 0);

  /* Stores through a region, copy_in to another dataspace, loads through its region. */
  unsigned char *a = 0;
  CHECK(l4re_rm_attach((void **)&a, 10000, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, ds, 0, L4_PAGESHIFT) == 0);
  for (int i = 0; i < 10000; i++) a[i] = (unsigned char)(i * 13 + 1);
  l4re_ds_t dst = l4re_util_cap_alloc();
  CHECK(l4re_ma_alloc(20000, dst, 0) == 0);
  CHECK(l4re_ds_copy_in(dst, 3, ds, 5, 9000) == 0);
  unsigned char *b = 0;
  CHECK(l4re_rm_attach((void **)&b, 20000, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_R, dst, 0, L4_PAGESHIFT) == 0);
  for (int i = 0; i < 3; i++) CHECK(b[i] == 0);
  for (int i = 0; i < 9000; i++) CHECK(b[3 + i] == (unsigned char)((i + 5) * 13 + 1));
  CHECK(b[9003] == 0);
  /* Overlapping copy within one dataspace, upwards: as memmove. */
  unsigned char expect[10000];
  memcpy(expect, a, 10000);
  memmove(expect + 100, expect, 9000);
  CHECK(l4re_ds_copy_in(ds, 100, ds, 0, 9000) == 0);
  CHECK(memcmp(a, expect, 10000) == 0);
  CHECK(l4re_ds_copy_in(dst, 19999, ds, 0, 2) < 0);
  CHECK(l4re_ds_copy_in(dst, 0, ds, 9999, 2) < 0);
  /* clear: zeros, seen through the region. */
  CHECK(l4re_ds_clear(ds, 10, 5000) == 0);
  for (int i = 10; i < 5010; i++) CHECK(a[i] == 0);
  CHECK(a[9] == expect[9] && a[5010] == expect[5010]);

  /* Errors: sizes, alignments, flags, slots. */
  l4re_ds_t c = l4re_util_cap_alloc();
  CHECK(l4re_ma_alloc(0, c, 0) == -L4_ERANGE);
  CHECK(l4re_ma_alloc(-4096, c, 0) == -L4_ERANGE);
  CHECK(l4re_ma_alloc(1L << 50, c, 0) < 0);
  CHECK(l4re_ma_alloc_align(4096, c, 0, 63) == -L4_ERANGE);
  CHECK(l4re_ma_alloc(4096, c, 0x100) == -L4_EINVAL);
  CHECK(l4re_ma_alloc(4096, 0x7000000, 0) == -L4_EINVAL);
  CHECK(l4re_ma_alloc(4096, L4_INVALID_CAP, 0) == -L4_EINVAL);
  CHECK(l4re_ds_size(c) == (l4re_ds_size_t)(int64_t)-L4_EINVAL);
  CHECK(l4re_ds_info(ds, NULL) == -L4_EINVAL);

  /* Free: the slot is empty, the region still shows the memory until detached. */
  CHECK(l4re_ma_free(ds) == 0);
  CHECK(l4re_ma_free(ds) == -L4_EINVAL);
  CHECK(a[5020] == expect[5020]);
  CHECK(l4re_rm_detach(a) == L4RE_RM_DETACHED_DS);
  CHECK(l4re_ma_alloc(4096, ds, 0) == 0); /* the empty slot takes a new one */
  l4re_util_cap_free(ds);
  CHECK(l4re_ds_size(ds) == (l4re_ds_size_t)(int64_t)-L4_EINVAL);
  l4re_util_cap_free(ds); /* freeing twice is ignored */

  puts("ok");
  return 0;
}
