/* Seed 004: the physical memory allocator through the header. */
#include <memkit.h>
#include <string.h>
#include "check.h"

struct reserved {
  const memory_area_t *regions;
  int count;
  int next;
};

/* Yields the regions, then false (and starts over for the next walk). */
static bool next_reserved(void *user, memory_area_t *out) {
  struct reserved *r = user;
  if (r->next == r->count) {
    r->next = 0;
    return false;
  }
  *out = r->regions[r->next++];
  return true;
}

static int overlaps(memory_area_t a, memory_area_t b) {
  return a.start < b.start + b.size && b.start < a.start + a.size;
}

int main(void) {
  /* 1 MiB .. 65 MiB, with two reserved regions (one at an odd offset). */
  const memory_area_t holes[] = {{0x200000, 0x3000}, {0x300801, 0x10}};
  struct reserved res = {holes, 2, 0};
  memory_area_t area = {0x100000, 64u << 20};
  memory_area_t hdr;

  CHECK(pmallocator_get_header(area, next_reserved, &res, &hdr) == ERR_NONE);
  CHECK(hdr.size == pmallocator_get_header_size(area));
  CHECK(hdr.size > 0 && hdr.size % 4096 == 0 && hdr.start % 4096 == 0);
  CHECK(hdr.start >= area.start && hdr.start + hdr.size <= area.start + area.size);
  CHECK(!overlaps(hdr, holes[0]) && !overlaps(hdr, holes[1]));
  CHECK(pmallocator_init_region(area, hdr, next_reserved, &res) == ERR_NONE);

  /* One block of each order 0..10: naturally aligned, inside, apart. */
  memory_area_t got[11];
  for (int o = 0; o <= 10; o++) {
    CHECK(pmallocator_allocate((uint8_t)o, hdr, &got[o]) == ERR_NONE);
    CHECK(got[o].size == (4096ull << o));
    CHECK(got[o].start % got[o].size == 0);
    CHECK(got[o].start >= area.start && got[o].start + got[o].size <= area.start + area.size);
    CHECK(!overlaps(got[o], hdr));
    CHECK(!overlaps(got[o], holes[0]) && !overlaps(got[o], holes[1]));
    for (int p = 0; p < o; p++) CHECK(!overlaps(got[o], got[p]));
  }

  /* Errors: an order the area cannot hold, a null out-pointer, an unknown header region,
   * a double free, a block that is not naturally aligned. */
  memory_area_t a;
  CHECK(pmallocator_allocate(60, hdr, &a) == ERR_NOT_VALID);
  CHECK(pmallocator_allocate(0, hdr, NULL) == ERR_NOT_VALID);
  memory_area_t nowhere = {0x7000000000ull, 4096};
  CHECK(pmallocator_allocate(0, nowhere, &a) == ERR_NOT_VALID);
  CHECK(pmallocator_free(got[3], hdr) == ERR_NONE);
  CHECK(pmallocator_free(got[3], hdr) == ERR_NOT_VALID);
  memory_area_t odd = {got[4].start + 4096, got[4].size};
  CHECK(pmallocator_free(odd, hdr) == ERR_NOT_VALID);
  CHECK(pmallocator_free(got[4], nowhere) == ERR_NOT_VALID);
  CHECK(pmallocator_get_header(area, NULL, NULL, NULL) == ERR_NOT_VALID);
  memory_area_t unaligned = {0x100001, 4096};
  CHECK(pmallocator_get_header(unaligned, NULL, NULL, &a) == ERR_NOT_VALID);
  CHECK(pmallocator_get_header_size(unaligned) == 0);

  /* An area wholly reserved has no room for its header. */
  memory_area_t small = {0x10000000, 0x10000};
  const memory_area_t all[] = {small};
  struct reserved full = {all, 1, 0};
  CHECK(pmallocator_get_header(small, next_reserved, &full, &a) == ERR_OUT_OF_MEMORY);

  /* An area overlapping another allocator's is refused. */
  memory_area_t over = {0x200000, 0x100000};
  memory_area_t over_hdr;
  CHECK(pmallocator_get_header(over, NULL, NULL, &over_hdr) == ERR_NONE);
  CHECK(pmallocator_init_region(over, over_hdr, NULL, NULL) == ERR_NOT_VALID);

  /* Exhaustion: 16 frames, one for the header, fifteen order-0 blocks, then full. */
  memory_area_t sh;
  CHECK(pmallocator_get_header(small, NULL, NULL, &sh) == ERR_NONE);
  CHECK(sh.size == 4096);
  CHECK(pmallocator_init_region(small, sh, NULL, NULL) == ERR_NONE);
  memory_area_t frames[16];
  int n = 0;
  while (pmallocator_allocate(FRAME_ORDER_4KiB, sh, &frames[n]) == ERR_NONE) {
    CHECK(n < 15);
    n++;
  }
  CHECK(n == 15);
  CHECK(pmallocator_allocate(0, sh, &a) == ERR_PHYSICAL_MEMORY_FULL);
  for (int i = 0; i < n; i++) CHECK(pmallocator_free(frames[i], sh) == ERR_NONE);
  CHECK(pmallocator_allocate(3, sh, &a) == ERR_NONE && a.size == 8 * 4096);
  /* Initialising the same header region again starts afresh. */
  CHECK(pmallocator_init_region(small, sh, NULL, NULL) == ERR_NONE);
  CHECK(pmallocator_allocate(3, sh, &a) == ERR_NONE);

  puts("ok");
  return 0;
}
