/* Which allocator serves this process: memkit's smallest block is 16 bytes. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
int main(void) { void *p = malloc(1); printf("%zu\n", malloc_usable_size(p)); free(p); return 0; }
