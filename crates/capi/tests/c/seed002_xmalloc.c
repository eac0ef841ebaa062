/* Seed 002: the AIX kernel heap services through the header. */
#include <errno.h>
#include <memkit.h>
#include <stdint.h>
#include <string.h>
#include "check.h"

static void fill(char *p, size_t n, int seed) {
  for (size_t i = 0; i < n; i++) p[i] = (char)(i * 31 + seed);
}

static int same(const char *p, size_t n, int seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (char)(i * 31 + seed)) return 0;
  return 1;
}

int main(void) {
  /* xmalloc(128, 3, kernel_heap): a double-word aligned block of 128 bytes. */
  char *p = xmalloc(128, 3, kernel_heap);
  CHECK(p != NULL && ((uintptr_t)p & 7) == 0);
  fill(p, 128, 1);
  char *q = xmalloc(3 * 4096, 12, pinned_heap);
  CHECK(q != NULL && ((uintptr_t)q & 4095) == 0);
  fill(q, 3 * 4096, 2);
  CHECK(same(p, 128, 1) && same(q, 3 * 4096, 2));

  /* Every alignment from 1 to 4096 bytes, every heap handle. */
  char *blocks[13];
  for (int a = 0; a <= 12; a++) {
    blocks[a] = xmalloc(100 + a, a, kernel_heap);
    CHECK(blocks[a] != NULL && ((uintptr_t)blocks[a] & ((1u << a) - 1)) == 0);
    fill(blocks[a], 100 + a, a);
  }
  for (int a = 0; a <= 12; a++) {
    CHECK(same(blocks[a], 100 + a, a));
    CHECK(xmfree(blocks[a], kernel_heap) == 0);
  }
  caddr_t heaps[] = {kernel_heap_4K_64K, kernel_heap_16M, pinned_heap_4K_64K, pinned_heap_16M};
  for (int h = 0; h < 4; h++) {
    char *b = xmalloc(5000, 4, heaps[h]);
    CHECK(b != NULL && ((uintptr_t)b & 15) == 0);
    fill(b, 5000, h);
    CHECK(same(b, 5000, h));
    CHECK(xmfree(b, heaps[h]) == 0);
  }
  char *pa = palloc(256, 8);
  CHECK(pa != NULL && ((uintptr_t)pa & 255) == 0);
  CHECK(xmfree(pa, kernel_heap) == 0);

  /* xmfree: a double free, another heap's block, a pointer inside a block. */
  CHECK(xmfree(p + 8, kernel_heap) == -1);
  CHECK(xmfree(p, kernel_heap) == 0);
  CHECK(xmfree(p, kernel_heap) == -1);
  CHECK(xmfree(q, kernel_heap) == -1);
  CHECK(xmfree(NULL, kernel_heap) == -1);

  /* pin / unpin: kernel-heap memory is unpinned before it is freed; pinned-heap memory
   * must not be unpinned. */
  char *r = xmalloc(64, 0, kernel_heap);
  CHECK(r != NULL);
  CHECK(pin(r, 64) == 0);
  CHECK(xmfree(r, kernel_heap) == -1);
  CHECK(unpin(r, 64) == 0);
  CHECK(unpin(r, 64) == EINVAL);
  CHECK(pin(r, 0) == EINVAL);
  CHECK(pin(NULL, 8) == EINVAL);
  CHECK(xmfree(r, kernel_heap) == 0);
  CHECK(pin(r, 64) == EINVAL);
  CHECK(unpin(q, 4096) == EINVAL);
  CHECK(xmfree(q, pinned_heap) == 0);

  /* Null for what cannot be allocated or a heap that is none. */
  CHECK(xmalloc(16, 0, (caddr_t)(uintptr_t)0x12345) == NULL);
  CHECK(xmalloc(16, 0, NULL) == NULL);
  CHECK(xmalloc(0, 0, kernel_heap) == NULL);
  CHECK(xmalloc(-1, 0, kernel_heap) == NULL);
  CHECK(xmalloc(16, 40, kernel_heap) == NULL);
  CHECK(xmalloc(16, -3, kernel_heap) == NULL);
  CHECK(xmalloc(0x7fffffff, 0, kernel_heap) == NULL);

  /* init_heap: a private heap over memory attached writable. */
  l4re_ds_t ds = l4re_util_cap_alloc();
  CHECK(l4re_ma_alloc(4 << 20, ds, 0) == 0);
  void *area = 0;
  CHECK(l4re_rm_attach(&area, 4 << 20, L4RE_RM_F_SEARCH_ADDR | L4RE_RM_F_RW, ds, 0, L4_PAGESHIFT) == 0);
  heapaddr_t mine = init_heap(area, 4 << 20, NULL);
  CHECK(mine != NULL);
  char *m = xmalloc(1000, 4, mine);
  CHECK(m != NULL && m >= (char *)area && m + 1000 <= (char *)area + (4 << 20));
  fill(m, 1000, 9);
  CHECK(same(m, 1000, 9));
  CHECK(xmfree(m, kernel_heap) == -1);
  CHECK(xmfree(m, mine) == 0);
  CHECK(xmfree(m, mine) == -1);
  /* Refused: memory not attached, an unaligned area, a size of no whole pages, a heap
   * descriptor that is not null. */
  static char not_attached[8192];
  CHECK(init_heap(not_attached, 8192, NULL) == NULL);
  CHECK(init_heap((char *)area + 1, 4096, NULL) == NULL);
  CHECK(init_heap(area, 100, NULL) == NULL);
  CHECK(init_heap(area, -4096, NULL) == NULL);
  CHECK(init_heap((char *)area + 4096, 8192, NULL) == NULL); /* inside the first heap's area */
  heapaddr_t taken = mine;
  CHECK(init_heap(area, 4096, &taken) == NULL);

  puts("ok");
  return 0;
}
