/* Seed 003: the DROPS dataspace manager (l4dm, DMphys) and l4rm through the header. */
#include <memkit.h>
#include <string.h>
#include "check.h"

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7 + 3); }

int main(void) {
  const l4_size_t size = 3 * 4096 + 100;
  l4dm_dataspace_t ds;
  CHECK(l4dm_mem_open(L4DM_DEFAULT_DSM, size, 0, L4DM_RESIZE, "data", &ds) == 0);
  l4_size_t got = 0;
  CHECK(l4dm_mem_size(&ds, &got) == 0 && got == size);

  /* Real stores through an attached region, real loads through another attachment. */
  unsigned char *a = NULL;
  CHECK(l4rm_attach(&ds, 4 * 4096, 0, L4DM_RW, (void **)&a) == 0 && a != NULL);
  for (size_t i = 0; i < size; i++) a[i] = pattern(i);
  unsigned char *a2 = NULL;
  CHECK(l4rm_attach(&ds, 4 * 4096, 0, L4DM_RO | L4RM_MAP, (void **)&a2) == 0 && a2 != a);
  for (size_t i = 0; i < size; i++) CHECK(a2[i] == pattern(i));
  CHECK(a2[size] == 0); /* the rest of the last page reads as zeros */

  /* l4dm_copy: an eager copy; with L4DM_COW, sharing until either side writes. */
  l4dm_dataspace_t copy, cow;
  CHECK(l4dm_copy(&ds, 0, "copy", &copy) == 0);
  CHECK(l4dm_copy(&ds, L4DM_COW, "cow", &cow) == 0);
  unsigned char *c = NULL, *w = NULL;
  CHECK(l4rm_attach(&copy, size, 0, L4DM_RO, (void **)&c) == 0);
  CHECK(l4rm_attach(&cow, size, 0, L4DM_RW, (void **)&w) == 0);
  for (size_t i = 0; i < size; i++) CHECK(c[i] == pattern(i) && w[i] == pattern(i));
  w[0] = 0xee;
  a[1] = 0xdd;
  CHECK(a[0] == pattern(0) && a2[1] == 0xdd && w[1] == pattern(1) && c[1] == pattern(1));
  CHECK(w[0] == 0xee && c[0] == pattern(0));

  /* l4dm_copy_long: any offsets, zeros before the destination offset. */
  l4dm_dataspace_t lc;
  CHECK(l4dm_copy_long(&ds, 5, 4097, 1000, 0, "long", &lc) == 0);
  CHECK(l4dm_mem_size(&lc, &got) == 0 && got == 4097 + 1000);
  unsigned char *l = NULL;
  CHECK(l4rm_attach(&lc, 2 * 4096, 0, L4DM_RO, (void **)&l) == 0);
  for (size_t i = 0; i < 4097; i++) CHECK(l[i] == 0);
  for (size_t i = 0; i < 1000; i++) CHECK(l[4097 + i] == (i + 5 == 1 ? 0xdd : pattern(i + 5)));
  CHECK(l4dm_copy_long(&ds, size - 10, 0, 11, 0, "past", &lc) == -L4_ERANGE);
  CHECK(l4dm_copy_long(&ds, 4096, 0, (l4_size_t)L4DM_WHOLE_DS, 0, "tail", &lc) == 0);
  CHECK(l4dm_mem_size(&lc, &got) == 0 && got == size - 4096);

  /* l4dm_mem_info: size, owner, name. */
  l4_threadid_t owner;
  char name[L4DM_NAME_MAX_LEN];
  l4_uint32_t next;
  CHECK(l4dm_mem_info(&ds, &got, &owner, name, &next) == 0);
  CHECK(got == size && owner.task == MEMKIT_CLIENT.task && strcmp(name, "data") == 0);

  /* l4dm_mem_resize: the kept bytes stay. */
  CHECK(l4dm_mem_resize(&ds, 4096) == 0);
  CHECK(l4dm_mem_size(&ds, &got) == 0 && got == 4096);
  CHECK(a[2] == pattern(2) && a2[4095] == pattern(4095));
  CHECK(l4dm_mem_resize(&ds, 2 * 4096) == 0);
  CHECK(a[4096] == 0); /* grown memory reads as zeros */

  /* DMphys: ISA DMA memory below 16 MiB, contiguous and pinned, at a physical address. */
  l4dm_dataspace_t dma;
  CHECK(l4dm_memphys_open(L4DM_MEMPHYS_ISA_DMA, (l4_addr_t)L4DM_MEMPHYS_ANY_ADDR, 8192, 8192,
                          L4DM_CONTIGUOUS | L4DM_PINNED, "dma", &dma) == 0);
  l4_addr_t pa;
  l4_size_t ps;
  CHECK(l4dm_mem_ds_phys_addr(&dma, 0, (l4_size_t)L4DM_WHOLE_DS, &pa, &ps) == 0);
  CHECK(pa % 8192 == 0 && ps == 8192 && pa + ps <= (16u << 20));
  l4dm_mem_addr_t pieces[4];
  CHECK(l4dm_mem_phys_addr(&dma, 100, 4000, pieces, 4, &ps) == 1);
  CHECK(pieces[0].addr == pa + 100 && pieces[0].size == 4000 && ps == 4000);
  l4dm_dataspace_t fixed;
  CHECK(l4dm_memphys_open(L4DM_MEMPHYS_ISA_DMA, pa, 4096, 0, 0, "taken", &fixed) == -L4_ENOMEM);
  l4dm_dataspace_t lazy;
  CHECK(l4dm_mem_open(L4DM_DEFAULT_DSM, 4096, 0, 0, "lazy", &lazy) == 0);
  CHECK(l4dm_mem_ds_phys_addr(&lazy, 0, 4096, &pa, &ps) < 0); /* never touched: no memory yet */
  CHECK(l4dm_memphys_open(9, (l4_addr_t)L4DM_MEMPHYS_ANY_ADDR, 4096, 0, 0, "nine", &fixed) == -L4_EINVAL);
  CHECK(l4dm_memphys_open(-1, (l4_addr_t)L4DM_MEMPHYS_ANY_ADDR, 4096, 0, 0, "neg", &fixed) == -L4_EINVAL);

  /* l4dm_memphys_copy into the default pool. */
  l4dm_dataspace_t pc;
  CHECK(l4dm_memphys_copy(&copy, 0, 0, (l4_size_t)L4DM_WHOLE_DS, L4DM_MEMPHYS_DEFAULT,
                          (l4_addr_t)L4DM_MEMPHYS_ANY_ADDR, 0, 0, 0, "pcopy", &pc) == 0);
  unsigned char *pcm = NULL;
  CHECK(l4rm_attach(&pc, size, 0, L4DM_RO, (void **)&pcm) == 0);
  for (size_t i = 0; i < size; i++) CHECK(pcm[i] == pattern(i));
  l4_threadid_t dmphys = l4dm_memphys_find_dmphys();
  CHECK(dmphys.task == MEMKIT_DSM.task && dmphys.thread == MEMKIT_DSM.thread);

  /* Errors: bad or closed ids, null out-pointers, another manager, bad values. */
  l4dm_dataspace_t bogus = {12345, MEMKIT_DSM};
  CHECK(l4dm_mem_size(&bogus, &got) == -L4_EINVAL);
  CHECK(l4dm_mem_size(NULL, &got) == -L4_EINVAL);
  CHECK(l4dm_mem_size(&ds, NULL) == -L4_EINVAL);
  CHECK(l4dm_close(&L4DM_INVALID_DATASPACE) == -L4_EINVAL);
  CHECK(l4dm_mem_open(L4DM_DEFAULT_DSM, 4096, 0, 0, "x", NULL) == -L4_EINVAL);
  l4_threadid_t other = {5, 5};
  CHECK(l4dm_mem_open(other, 4096, 0, 0, "x", &bogus) == -L4_ENODM);
  CHECK(l4dm_mem_open(L4DM_DEFAULT_DSM, 4096, 3000, 0, "x", &bogus) == -L4_EINVAL);
  CHECK(l4dm_mem_open(L4DM_DEFAULT_DSM, 0, 0, 0, "x", &bogus) == -L4_ERANGE);
  CHECK(l4dm_mem_open(L4DM_DEFAULT_DSM, (l4_size_t)1 << 40, 0, 0, "x", &bogus) < 0);
  CHECK(l4dm_copy(&ds, 0, "x", NULL) == -L4_EINVAL);
  CHECK(l4dm_close_all(L4DM_DEFAULT_DSM, L4_INVALID_ID, 0) == -L4_EINVAL);
  CHECK(l4rm_attach(&bogus, 4096, 0, L4DM_RW, (void **)&c) == -L4_EINVAL);
  CHECK(l4rm_attach(&ds, 4096, 0, L4DM_RW, NULL) == -L4_EINVAL);
  CHECK(l4rm_detach((void *)0x1000) == -L4_EINVAL);

  /* Closing keeps the memory while a region shows it; the id is dead at once. */
  CHECK(l4dm_close(&ds) == 0);
  CHECK(l4dm_close(&ds) == -L4_EINVAL);
  CHECK(l4dm_mem_size(&ds, &got) == -L4_EINVAL);
  CHECK(a[3] == pattern(3));
  CHECK(l4rm_detach(a) == 0 && l4rm_detach(a2) == 0);
  CHECK(l4rm_detach(a) == -L4_EINVAL);
  CHECK(l4rm_detach(c) == 0 && l4rm_detach(w) == 0 && l4rm_detach(l) == 0 && l4rm_detach(pcm) == 0);
  CHECK(l4dm_close_all(L4DM_DEFAULT_DSM, MEMKIT_CLIENT, L4DM_SAME_TASK) == 0);
  CHECK(l4dm_mem_size(&copy, &got) == -L4_EINVAL);

  puts("ok");
  return 0;
}
