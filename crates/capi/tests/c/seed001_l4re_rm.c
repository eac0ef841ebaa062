/* Seed 001: L4Re's region map through L4Re's C bindings' names. */
#include <memkit.h>
#include <string.h>
#include "check.h"

int main(void) {
  l4re_ds_t ds = l4re_util_cap_alloc();
  CHECK(l4re_ma_alloc(3 * 4096, ds, 0) == 0);

  /* Two attachments of one dataspace show the same memory. */
  char *a = 0, *b = 0;
  CHECK(l4re_rm_attach((void **)&a, 3 * 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, ds, 0, L4_PAGESHIFT) == 0);
  CHECK(l4re_rm_attach((void **)&b, 3 * 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_R | L4RE_RM_F_EAGER_MAP, ds, 0,
                       L4_PAGESHIFT) == 0);
  CHECK(a != b && a != NULL && b != NULL);
  for (int i = 0; i < 3 * 4096; i++) a[i] = (char)(i ^ 0x5a);
  for (int i = 0; i < 3 * 4096; i++) CHECK(b[i] == (char)(i ^ 0x5a));
  /* With an offset: the second page on. */
  char *c = 0;
  CHECK(l4re_rm_attach((void **)&c, 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, ds, 4096, L4_PAGESHIFT) == 0);
  CHECK(memcmp(c, a + 4096, 4096) == 0);
  c[7] = 'x';
  CHECK(a[4096 + 7] == 'x' && b[4096 + 7] == 'x');

  /* find: start, size, offset, rights and the slot. */
  l4_addr_t fa = (l4_addr_t)c + 100;
  unsigned long fs = 1;
  l4re_rm_offset_t off;
  l4re_rm_flags_t fl;
  l4re_ds_t m;
  CHECK(l4re_rm_find(&fa, &fs, &off, &fl, &m) == 0);
  CHECK(fa == (l4_addr_t)c && fs == 4096 && off == 4096 && fl == L4RE_RM_F_RW && m == ds);
  fa = (l4_addr_t)b;
  fs = 1;
  CHECK(l4re_rm_find(&fa, &fs, &off, &fl, &m) == 0 && fl == L4RE_RM_F_R);
  CHECK(l4re_rm_find(&fa, &fs, NULL, &fl, &m) == -L4_EINVAL);
  fa = 0x1000;
  fs = 1;
  CHECK(l4re_rm_find(&fa, &fs, &off, &fl, &m) == -L4_ENOENT);

  /* Areas: reserve 1 MiB aligned to 1 MiB, attach inside it, free it. */
  l4_addr_t area = 0;
  CHECK(l4re_rm_reserve_area(&area, 1 << 20, L4RE_RM_F_SEARCH_ADDR, 20) == 0);
  CHECK(area != 0 && area % (1 << 20) == 0);
  char *d = (char *)area;
  CHECK(l4re_rm_attach((void **)&d, 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_IN_AREA | L4RE_RM_F_RW, ds, 0,
                       L4_PAGESHIFT) == 0);
  CHECK((l4_addr_t)d >= area && (l4_addr_t)d + 4096 <= area + (1 << 20));
  CHECK(d[1] == (char)(1 ^ 0x5a));
  char *e = (char *)area;
  CHECK(l4re_rm_attach((void **)&e, 4096, L4RE_RM_F_RW, ds, 0, L4_PAGESHIFT) < 0); /* inside an area */
  l4_addr_t again = area;
  CHECK(l4re_rm_reserve_area(&again, 4096, 0, L4_PAGESHIFT) == -L4_EADDRNOTAVAIL);
  CHECK(l4re_rm_free_area(area) == 0);
  CHECK(l4re_rm_free_area(area) == -L4_ENOENT);

  /* A fixed address that is taken. */
  char *f = a;
  CHECK(l4re_rm_attach((void **)&f, 4096, L4RE_RM_F_RW, ds, 0, L4_PAGESHIFT) == -L4_EADDRNOTAVAIL);

  /* Errors: null start, bad slot, unknown flags, a misaligned offset. */
  CHECK(l4re_rm_attach(NULL, 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, ds, 0, 12) == -L4_EINVAL);
  char *g = 0;
  CHECK(l4re_rm_attach((void **)&g, 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, 0x3000000, 0, 12) == -L4_EINVAL);
  CHECK(l4re_rm_attach((void **)&g, 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW | 0x100000, ds, 0, 12) == -L4_EINVAL);
  CHECK(l4re_rm_attach((void **)&g, 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, ds, 5, 12) < 0);
  CHECK(l4re_rm_reserve_area(NULL, 4096, L4RE_RM_F_SEARCH_ADDR, 12) == -L4_EINVAL);

  /* Detach: the result, then nothing there; detach_ds names the slot. */
  CHECK(l4re_rm_detach(b) == L4RE_RM_DETACHED_DS);
  CHECK(l4re_rm_detach(b) == -L4_ENOENT);
  l4re_ds_t which = 0;
  CHECK(l4re_rm_detach_ds(c + 5, &which) == L4RE_RM_DETACHED_DS && which == ds);
  CHECK(l4re_rm_detach(d) == L4RE_RM_DETACHED_DS);
  CHECK(a[4096 + 7] == 'x');
  CHECK(l4re_rm_detach(a) == L4RE_RM_DETACHED_DS);
  l4re_util_cap_free(ds);

  puts("ok");
  return 0;
}
