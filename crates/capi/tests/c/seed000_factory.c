/* Seed 000: factories (create_factory with a limit) and Mem_alloc from them, in the shape of
 * L4's C bindings: l4_factory_create_factory, l4re_ma_alloc_srv, l4_error, l4re_env. */
#include <memkit.h>
#include <string.h>
#include "check.h"

static unsigned long used_of(l4_cap_idx_t f) {
  unsigned long limit = 0, used = 0;
  CHECK(memkit_factory_quota(f, &limit, &used) == 0);
  return used;
}

static unsigned long limit_of(l4_cap_idx_t f) {
  unsigned long limit = 0, used = 0;
  CHECK(memkit_factory_quota(f, &limit, &used) == 0);
  return limit;
}

int main(void) {
  const l4re_env_t *env = l4re_env();
  CHECK(env != NULL);
  l4_cap_idx_t root = env->mem_alloc;
  const unsigned long root_used = used_of(root);
  CHECK(limit_of(root) > (64u << 20));

  /* A factory of 64 KiB, carved out of the root's quota. */
  l4_cap_idx_t f = l4re_util_cap_alloc();
  l4_msgtag_t t = l4_factory_create_factory(root, f, 64 << 10);
  CHECK(l4_error(t) == 0 && l4_msgtag_label(t) == 0);
  CHECK(limit_of(f) == (64u << 10) && used_of(f) == 0);
  CHECK(used_of(root) == root_used + (64u << 10));

  /* A dataspace from it: charged to it, real memory behind an attachment. */
  l4re_ds_t ds = l4re_util_cap_alloc();
  CHECK(l4re_ma_alloc_srv(f, 16 << 10, ds, 0) == 0);
  CHECK(l4re_ds_size(ds) == (16u << 10) && used_of(f) == (16u << 10));
  char *p = 0;
  CHECK(l4re_rm_attach((void **)&p, 16 << 10, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, ds, 0, L4_PAGESHIFT) == 0);
  for (int i = 0; i < (16 << 10); i++) p[i] = (char)(i * 13);
  for (int i = 0; i < (16 << 10); i++) CHECK(p[i] == (char)(i * 13));

  /* Past the quota: -L4_ENOMEM; the quota is unchanged. */
  l4re_ds_t ds2 = l4re_util_cap_alloc();
  CHECK(l4re_ma_alloc_srv(f, 64 << 10, ds2, 0) == -L4_ENOMEM);
  CHECK(l4re_ma_alloc_align_srv(f, 48 << 10, ds2, 0, 12) == 0); /* exactly what is left */
  CHECK(used_of(f) == (64u << 10));
  CHECK(l4re_ma_alloc_srv(f, 1, l4re_util_cap_alloc(), 0) == -L4_ENOMEM);
  CHECK(l4re_ma_free_srv(f, ds2) == 0 && used_of(f) == (16u << 10));
  /* As much as possible, leaving 4 KiB of the quota. */
  CHECK(l4re_ma_alloc_srv(f, -(4 << 10), ds2, L4RE_MA_CONTINUOUS) == 0);
  CHECK(l4re_ds_size(ds2) == (44u << 10) && used_of(f) == (60u << 10));
  /* Freed through another allocator: refused; through its own: the charge goes. */
  CHECK(l4re_ma_free_srv(root, ds2) == -L4_EINVAL);
  CHECK(l4re_ma_free(ds2) == -L4_EINVAL);
  CHECK(l4re_ma_free_srv(f, ds2) == 0 && used_of(f) == (16u << 10));

  /* A nested factory takes its limit from its parent's quota. */
  l4_cap_idx_t g = l4re_util_cap_alloc();
  CHECK(l4_error(l4_factory_create_factory(f, g, 32 << 10)) == 0);
  CHECK(used_of(f) == (48u << 10));
  l4_cap_idx_t h = l4re_util_cap_alloc();
  CHECK(l4_error(l4_factory_create_factory(f, h, 32 << 10)) == -L4_ENOMEM);
  CHECK(l4_error(l4_factory_create_factory(g, h, 0)) == 0); /* a zero limit is a factory too */
  CHECK(l4re_ma_alloc_srv(h, 1, ds2, 0) == -L4_ENOMEM);
  l4re_util_cap_free(h);
  CHECK(l4re_ma_alloc_srv(g, 8 << 10, ds2, 0) == 0 && used_of(g) == (8u << 10));

  /* Wrong kinds and bad slots. */
  CHECK(l4_error(l4_factory_create_factory(f, g, 4096)) == -L4_EBUSY);  /* target holds one */
  CHECK(l4_error(l4_factory_create_factory(f, ds, 4096)) == -L4_EBUSY); /* target holds a ds */
  l4_cap_idx_t empty = l4re_util_cap_alloc();
  CHECK(l4_error(l4_factory_create_factory(ds, empty, 4096)) == -L4_EINVAL); /* a ds is no factory */
  CHECK(l4_error(l4_factory_create_factory(empty, empty, 4096)) == -L4_EINVAL);
  CHECK(l4_error(l4_factory_create_factory(0x7fff000, empty, 4096)) == -L4_EINVAL);
  CHECK(l4_error(l4_factory_create_factory(f, 0x7fff000, 4096)) == -L4_EINVAL);
  CHECK(l4_error(l4_factory_create_factory(root, empty, ~0UL)) == -L4_ENOMEM);
  CHECK(l4re_ma_alloc_srv(ds, 4096, empty, 0) == -L4_EINVAL);
  CHECK(l4re_ma_alloc_srv(f, 4096, f, 0) == -L4_EBUSY);
  CHECK(l4re_ma_alloc_srv(f, 4096, empty, 0x100) == -L4_EINVAL);
  CHECK(l4re_ds_size(f) == (l4re_ds_size_t)(long)-L4_EINVAL);
  CHECK(memkit_factory_quota(ds, NULL, NULL) == -L4_EINVAL);
  unsigned long lim, use;
  CHECK(memkit_factory_quota(ds, &lim, &use) == -L4_EINVAL);
  CHECK(memkit_factory_quota(empty, &lim, &use) == -L4_EINVAL);
  l4re_util_cap_free(root); /* ignored: the root allocator stays */
  CHECK(l4re_env()->mem_alloc == root && limit_of(root) > 0);

  /* Freeing a factory's slot: destroyed now when empty, else once nothing is charged. */
  CHECK(l4re_ma_free_srv(g, ds2) == 0);
  l4re_util_cap_free(g);
  CHECK(used_of(f) == (16u << 10));
  l4re_util_cap_free(f); /* ds is still charged to it */
  CHECK(used_of(root) == root_used + (64u << 10));
  CHECK(memkit_factory_quota(f, &lim, &use) == -L4_EINVAL); /* the slot is free */
  l4re_util_cap_free(ds); /* the handle goes; the region still shows the memory */
  CHECK(p[100] == (char)(100 * 13));
  CHECK(used_of(root) == root_used + (64u << 10));
  CHECK(l4re_rm_detach(p) == L4RE_RM_DETACHED_DS); /* the memory goes, then the factory */
  CHECK(used_of(root) == root_used);

  puts("ok");
  return 0;
}
