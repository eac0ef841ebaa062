/* A C file for gcc to compile (and the result to run): some structs, recursion, qsort,
   a hash table on malloc. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node { char *key; int count; struct node *next; };

static unsigned hash(const char *s) { unsigned h = 5381; while (*s) h = h * 33 + (unsigned char)*s++; return h; }

static int cmp(const void *a, const void *b) {
    const struct node *x = *(struct node *const *)a, *y = *(struct node *const *)b;
    return x->count != y->count ? y->count - x->count : strcmp(x->key, y->key);
}

static long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

int main(void) {
    enum { BUCKETS = 4096 };
    struct node **table = calloc(BUCKETS, sizeof *table);
    int distinct = 0;
    char word[32];
    for (int i = 0; i < 300000; i++) {
        snprintf(word, sizeof word, "w%ld", (long)i * 7919 % 20011 % (1 + i % 977));
        unsigned b = hash(word) % BUCKETS;
        struct node *n = table[b];
        while (n && strcmp(n->key, word)) n = n->next;
        if (!n) {
            n = malloc(sizeof *n); n->key = strdup(word); n->count = 0; n->next = table[b]; table[b] = n;
            distinct++;
        }
        n->count++;
    }
    struct node **all = malloc(distinct * sizeof *all);
    int k = 0;
    for (int b = 0; b < BUCKETS; b++) for (struct node *n = table[b]; n; n = n->next) all[k++] = n;
    qsort(all, distinct, sizeof *all, cmp);
    printf("distinct %d top %s %d fib %ld\n", distinct, all[0]->key, all[0]->count, fib(27));
    for (int i = 0; i < distinct; i++) { free(all[i]->key); free(all[i]); }
    free(all); free(table);
    return 0;
}
