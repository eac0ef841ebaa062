/* Seed 003: DROPS's region mapper areas (l4rm_area_*, l4rm_attach_to_region) and
 * l4dm_share, with loads and stores through the attached regions. */
#include <memkit.h>
#include <string.h>
#include "check.h"

#define MIB (1UL << 20)

int main(void) {
  l4dm_dataspace_t ds;
  CHECK(l4dm_mem_open(L4DM_DEFAULT_DSM, 4 * 4096, 0, 0, "areas", &ds) == 0);

  /* An area of 1 MiB aligned to its size; attachments inside it by id. */
  l4_addr_t start = 0;
  l4_uint32_t id = 0;
  CHECK(l4rm_area_reserve(MIB, L4RM_LOG2_ALIGNED, &start, &id) == 0);
  CHECK(start != 0 && start % MIB == 0 && id != 0);
  unsigned char *p = NULL;
  CHECK(l4rm_area_attach(&ds, id, 2 * 4096, 0, L4DM_RW, (void **)&p) == 0);
  CHECK((l4_addr_t)p >= start && (l4_addr_t)p + 2 * 4096 <= start + MIB);
  for (int i = 0; i < 2 * 4096; i++) p[i] = (unsigned char)(i ^ 0xa5);
  /* At a chosen address inside the area: page 1 of the dataspace, read-only. */
  unsigned char *q = (unsigned char *)(start + 0x10000);
  CHECK(l4rm_area_attach_to_region(&ds, id, q, 4096, 4096, L4DM_RO) == 0);
  for (int i = 0; i < 4096; i++) CHECK(q[i] == (unsigned char)((i + 4096) ^ 0xa5));
  p[4096 + 9] = 0x11;
  CHECK(q[9] == 0x11);
  CHECK(l4rm_area_attach_to_region(&ds, id, q, 4096, 0, L4DM_RO) == -L4_EADDRNOTAVAIL); /* taken */
  CHECK(l4rm_area_attach_to_region(&ds, id, (void *)(start + MIB), 4096, 0, L4DM_RO) == -L4_EINVAL);
  CHECK(l4rm_area_attach_to_region(&ds, id, (void *)(start - 4096), 4096, 0, L4DM_RO) == -L4_EINVAL);
  CHECK(l4rm_area_attach_to_region(&ds, id, (void *)(start + MIB - 4096), 2 * 4096, 0, L4DM_RO) < 0);

  /* Plain attachments never go into the area; a fixed one there is refused. */
  for (int i = 0; i < 8; i++) {
    void *r = NULL;
    CHECK(l4rm_attach(&ds, 4096, 0, L4DM_RO, &r) == 0);
    CHECK((l4_addr_t)r + 4096 <= start || (l4_addr_t)r >= start + MIB);
  }
  CHECK(l4rm_attach_to_region(&ds, (void *)(start + 0x20000), 4096, 0, L4DM_RO) < 0);

  /* A fixed area and a fixed attachment at a free address (one of a released area). */
  l4_addr_t spot = 0;
  l4_uint32_t tmp = 0;
  CHECK(l4rm_area_reserve(4 * 4096, L4RM_LOG2_ALLOC, &spot, &tmp) == 0);
  l4_uint32_t inside = 0;
  CHECK(l4rm_area_reserve_region(spot + 3 * 4096, 4096, 0, &inside) == -L4_EADDRNOTAVAIL && inside == 0);
  CHECK(l4rm_area_release(tmp) == 0);
  CHECK(l4rm_attach_to_region(&ds, (void *)spot, 4096, 4096, L4DM_RW | L4RM_MAP) == 0);
  CHECK(((unsigned char *)spot)[9] == 0x11);
  CHECK(l4rm_attach_to_region(&ds, (void *)spot, 4096, 0, L4DM_RW) == -L4_EADDRNOTAVAIL);
  CHECK(l4rm_detach((void *)spot) == 0);
  l4_uint32_t fixed = 0;
  CHECK(l4rm_area_reserve_region(spot, 2 * 4096, 0, &fixed) == 0 && fixed != id);
  void *in = NULL;
  CHECK(l4rm_area_attach(&ds, fixed, 2 * 4096, 0, L4DM_RW, &in) == 0 && (l4_addr_t)in == spot);
  CHECK(l4rm_area_attach(&ds, fixed, 4096, 0, L4DM_RW, &in) < 0); /* full */
  CHECK(l4rm_detach(in) == 0);

  /* LOG2_ALLOC takes the whole power of two: 3 pages reserve 4. */
  l4_addr_t four = 0;
  l4_uint32_t four_id = 0;
  CHECK(l4rm_area_reserve(3 * 4096, L4RM_LOG2_ALLOC, &four, &four_id) == 0 && four % (4 * 4096) == 0);
  l4_uint32_t over = 0;
  CHECK(l4rm_area_reserve_region(four + 3 * 4096, 4096, 0, &over) == -L4_EADDRNOTAVAIL);
  CHECK(l4rm_area_release_addr((void *)(four + 3 * 4096 + 5)) == 0); /* any address inside */
  CHECK(l4rm_area_release(four_id) == -L4_EINVAL);                   /* its id is gone */

  /* A used area takes no attachment. */
  l4_addr_t used = 0;
  l4_uint32_t used_id = 0;
  CHECK(l4rm_area_reserve(4096, L4RM_RESERVE_USED, &used, &used_id) == 0);
  CHECK(l4rm_area_attach(&ds, used_id, 4096, 0, L4DM_RW, &in) < 0);
  /* Freed through L4Re's name, the id names nothing. */
  CHECK(l4re_rm_free_area(used) == 0);
  CHECK(l4rm_area_release(used_id) == -L4_EINVAL);
  CHECK(l4rm_area_attach(&ds, used_id, 4096, 0, L4DM_RW, &in) == -L4_EINVAL);

  /* Garbage: null pointers, zero sizes, unknown flags and ids, wild addresses. */
  CHECK(l4rm_area_reserve(4096, 0, NULL, &tmp) == -L4_EINVAL);
  CHECK(l4rm_area_reserve(4096, 0, &spot, NULL) == -L4_EINVAL);
  CHECK(l4rm_area_reserve(0, 0, &spot, &tmp) == -L4_EINVAL);
  CHECK(l4rm_area_reserve(4096, 0x1, &spot, &tmp) == -L4_EINVAL);
  CHECK(l4rm_area_reserve(~0UL, 0, &spot, &tmp) < 0);
  CHECK(l4rm_area_reserve(~0UL, L4RM_LOG2_ALLOC, &spot, &tmp) == -L4_EINVAL);
  CHECK(l4rm_area_reserve_region(spot, 4096, L4RM_LOG2_ALIGNED, &tmp) == -L4_EINVAL);
  CHECK(l4rm_area_reserve_region(spot, 4096, 0, NULL) == -L4_EINVAL);
  CHECK(l4rm_area_reserve_region(~0UL & ~0xfffUL, 4096, 0, &tmp) < 0);
  CHECK(l4rm_area_reserve_region(0x8000000000000000UL, 4096, 0, &tmp) < 0);
  CHECK(l4rm_area_release(0) == -L4_EINVAL && l4rm_area_release(0xffffffffu) == -L4_EINVAL);
  CHECK(l4rm_area_release_addr(NULL) == -L4_EINVAL && l4rm_area_release_addr((void *)-1) == -L4_EINVAL);
  CHECK(l4rm_area_attach(&ds, id, 4096, 0, L4DM_RW, NULL) == -L4_EINVAL);
  CHECK(l4rm_area_attach(NULL, id, 4096, 0, L4DM_RW, &in) == -L4_EINVAL);
  CHECK(l4rm_area_attach(&ds, id, 4096, 0, 0x80, &in) == -L4_EINVAL);
  CHECK(l4rm_area_attach(&ds, 0xfffffffu, 4096, 0, L4DM_RW, &in) == -L4_EINVAL);
  CHECK(l4rm_area_attach_to_region(&ds, id, (void *)-1, 4096, 0, L4DM_RW) == -L4_EINVAL);
  CHECK(l4rm_attach_to_region(&ds, (void *)0x8000000000000000UL, 4096, 0, L4DM_RW) < 0);
  CHECK(l4rm_attach_to_region(&ds, (void *)(spot + 1), 4096, 0, L4DM_RW) < 0);
  CHECK(l4rm_attach_to_region(&ds, (void *)spot, 4096, 0, L4RM_LOG2_ALIGNED) == -L4_EINVAL);
  l4dm_dataspace_t bad = L4DM_INVALID_DATASPACE;
  CHECK(l4rm_attach_to_region(&bad, (void *)spot, 4096, 0, L4DM_RW) == -L4_EINVAL);

  /* Releasing the area keeps its regions. */
  CHECK(l4rm_area_release(id) == 0);
  CHECK(l4rm_area_release(id) == -L4_EINVAL);
  CHECK(p[4096 + 9] == 0x11 && q[9] == 0x11);
  CHECK(l4rm_detach(p) == 0 && l4rm_detach(q) == 0);

  /* l4dm_share: a read-only id of the same dataspace, to pass on. */
  l4dm_dataspace_t ro;
  CHECK(l4dm_share(&ds, MEMKIT_CLIENT, L4DM_RO, &ro) == 0);
  unsigned char *w = NULL, *r = NULL;
  CHECK(l4rm_attach(&ds, 4 * 4096, 0, L4DM_RW, (void **)&w) == 0);
  CHECK(l4rm_attach(&ro, 4 * 4096, 0, L4DM_RW, (void **)&r) == -L4_EPERM);
  CHECK(l4rm_attach(&ro, 4 * 4096, 0, L4DM_RO, (void **)&r) == 0);
  w[3 * 4096 + 1] = 0x77;
  CHECK(r[3 * 4096 + 1] == 0x77 && r[9 + 4096] == 0x11);
  l4_size_t sz = 0;
  CHECK(l4dm_mem_size(&ro, &sz) == 0 && sz == 4 * 4096);
  CHECK(l4dm_close(&ro) == -L4_EPERM);
  CHECK(l4dm_mem_resize(&ro, 4096) == -L4_EPERM);
  l4dm_dataspace_t again;
  CHECK(l4dm_share(&ro, MEMKIT_CLIENT, L4DM_RW, &again) == -L4_EPERM); /* no widening */
  CHECK(l4dm_share(&ro, MEMKIT_CLIENT, L4DM_RO, &again) == 0);
  CHECK(l4dm_share(&ds, MEMKIT_CLIENT, L4DM_RW, &again) == 0 && l4dm_close(&again) == 0);
  CHECK(l4dm_share(&ds, MEMKIT_CLIENT, L4DM_RO, &again) == -L4_EINVAL); /* closed */
  CHECK(r[3 * 4096 + 1] == 0x77); /* the regions keep the memory */
  CHECK(l4dm_share(&ro, L4_INVALID_ID, L4DM_RO, &again) == -L4_EINVAL);
  CHECK(l4dm_share(&ro, MEMKIT_CLIENT, 0, &again) == -L4_EINVAL);
  CHECK(l4dm_share(&ro, MEMKIT_CLIENT, L4DM_RO | L4DM_COW, &again) == -L4_EINVAL);
  CHECK(l4dm_share(&ro, MEMKIT_CLIENT, L4DM_RO, NULL) == -L4_EINVAL);
  CHECK(l4dm_share(NULL, MEMKIT_CLIENT, L4DM_RO, &again) == -L4_EINVAL);
  CHECK(l4dm_share(&bad, MEMKIT_CLIENT, L4DM_RO, &again) == -L4_EINVAL);
  CHECK(l4rm_detach(w) == 0 && l4rm_detach(r) == 0);

  puts("ok");
  return 0;
}
