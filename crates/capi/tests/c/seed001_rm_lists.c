/* Seed 001: L4Re::Rm's get_regions and get_areas (l4re_rm_get_regions, l4re_rm_get_areas)
 * and L4Re's l4re_rm_show_lists. */
#define _POSIX_C_SOURCE 200809L
#include <memkit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "check.h"

/* Whether `list` holds the range [start, start + size - 1]. */
static int holds(const l4re_rm_range_t *list, int n, l4_addr_t start, unsigned long size) {
  for (int i = 0; i < n; i++)
    if (list[i].start == start && list[i].end == start + size - 1) return 1;
  return 0;
}

int main(void) {
  l4re_ds_t ds = l4re_util_cap_alloc();
  CHECK(l4re_ma_alloc(4 * 4096, ds, 0) == 0);
  char *a = 0, *b = 0;
  CHECK(l4re_rm_attach((void **)&a, 4 * 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, ds, 0, L4_PAGESHIFT) == 0);
  CHECK(l4re_rm_attach((void **)&b, 4096, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_R, ds, 8192, L4_PAGESHIFT) == 0);
  a[8192] = 'q';
  CHECK(b[0] == 'q');
  l4_addr_t area = 0;
  CHECK(l4re_rm_reserve_area(&area, 1 << 20, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RESERVED, 20) == 0);

  /* Every region from the bottom, in address order. */
  l4re_rm_range_t list[64];
  int n = l4re_rm_get_regions(0, list, 64);
  CHECK(n >= 2 && holds(list, n, (l4_addr_t)a, 4 * 4096) && holds(list, n, (l4_addr_t)b, 4096));
  for (int i = 1; i < n; i++) CHECK(list[i - 1].end < list[i].start);
  /* One at a time, from one past the end of the last. */
  l4_addr_t from = 0;
  int seen = 0;
  for (;;) {
    l4re_rm_range_t one;
    int got = l4re_rm_get_regions(from, &one, 1);
    CHECK(got == 0 || got == 1);
    if (got == 0) break;
    CHECK(one.start >= from && one.start == list[seen].start && one.end == list[seen].end);
    seen++;
    from = one.end + 1;
  }
  CHECK(seen == n);
  n = l4re_rm_get_areas(0, list, 64);
  CHECK(n >= 1 && holds(list, n, area, 1 << 20));
  int m = l4re_rm_get_areas(area + 1, list, 64);
  CHECK(m >= 0 && !holds(list, m, area, 1 << 20));

  /* Nothing asked, nothing past the top, no buffer. */
  CHECK(l4re_rm_get_regions(0, list, 0) == 0);
  CHECK(l4re_rm_get_regions(~0UL, list, 64) == 0);
  CHECK(l4re_rm_get_areas(~0UL, list, 64) == 0);
  CHECK(l4re_rm_get_regions(0, NULL, 64) == -L4_EINVAL);
  CHECK(l4re_rm_get_areas(0, NULL, 1) == -L4_EINVAL);

  /* show_lists: the regions and areas on standard output. */
  char path[] = "/tmp/memkit-show-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  fflush(stdout);
  int saved = dup(1);
  CHECK(saved >= 0 && dup2(fd, 1) == 1);
  l4re_rm_show_lists();
  fflush(stdout);
  CHECK(dup2(saved, 1) == 1);
  close(saved);
  char text[1 << 16];
  ssize_t len = pread(fd, text, sizeof text - 1, 0);
  close(fd);
  unlink(path);
  CHECK(len > 0);
  text[len] = 0;
  char want[128];
  snprintf(want, sizeof want, "[%#lx, %#lx] %#lx bytes rw- ds %#lx offset 0x0", (l4_addr_t)a,
           (l4_addr_t)a + 4 * 4096 - 1, 4 * 4096UL, ds);
  CHECK(strstr(text, want) != NULL);
  snprintf(want, sizeof want, "[%#lx, %#lx] %#lx bytes r-- ds %#lx offset 0x2000", (l4_addr_t)b,
           (l4_addr_t)b + 4095, 4096UL, ds);
  CHECK(strstr(text, want) != NULL);
  snprintf(want, sizeof want, "[%#lx, %#lx] %#lx bytes reserved", area, area + (1 << 20) - 1, 1UL << 20);
  CHECK(strstr(text, want) != NULL);
  CHECK(strstr(text, "regions:") < strstr(text, "areas:"));

  CHECK(l4re_rm_free_area(area) == 0);
  CHECK(l4re_rm_detach(a) == L4RE_RM_DETACHED_DS && l4re_rm_detach(b) == L4RE_RM_DETACHED_DS);
  n = l4re_rm_get_regions(0, list, 64);
  CHECK(!holds(list, n, (l4_addr_t)a, 4 * 4096) && !holds(list, n, (l4_addr_t)b, 4096));
  l4re_util_cap_free(ds);
  puts("ok");
  return 0;
}
