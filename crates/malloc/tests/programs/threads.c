/* Threads that malloc and free across each other, a fork while they run (the child
   allocates), and (with the argument "signals") a signal handler that allocates while the
   main thread is in malloc, which glibc's malloc does not survive: it may deadlock.
   Prints only deterministic sums, so that runs under any allocator compare equal; whether
   the handler allocated goes to standard error. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 4
#define ROUNDS 60000
#define RING 256

static void *ring[RING];
static size_t ring_size[RING];
static int head, tail;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t nonempty = PTHREAD_COND_INITIALIZER, nonfull = PTHREAD_COND_INITIALIZER;
static int producers_left = THREADS;
static volatile sig_atomic_t signals_seen;
static volatile int stop_signals;

static unsigned long long checksum(const unsigned char *p, size_t n) {
    unsigned long long s = 0;
    for (size_t i = 0; i < n; i++) s = s * 31 + p[i];
    return s;
}

static void *producer(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u;
    for (int i = 0; i < ROUNDS; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 8) % (i % 100 == 0 ? 200000 : 2000);
        unsigned char *p = malloc(n);
        if (!p) { fprintf(stderr, "malloc failed\n"); exit(2); }
        memset(p, (int)(n & 0xff), n);
        if (i % 2 == 0) { /* keep some locally, and grow them */
            unsigned char *q = realloc(p, n * 2);
            if (!q) exit(3);
            memset(q + n, (int)(n & 0xff), n);
            for (size_t k = 0; k < 2 * n; k++) if (q[k] != (unsigned char)(n & 0xff)) { fprintf(stderr, "realloc lost data\n"); exit(4); }
            free(q);
            continue;
        }
        pthread_mutex_lock(&lock);
        while ((head + 1) % RING == tail) pthread_cond_wait(&nonfull, &lock);
        ring[head] = p; ring_size[head] = n; head = (head + 1) % RING;
        pthread_cond_signal(&nonempty);
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    producers_left--;
    pthread_cond_broadcast(&nonempty);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void *consumer(void *arg) {
    unsigned long long *total = arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (head == tail && producers_left > 0) pthread_cond_wait(&nonempty, &lock);
        if (head == tail) { pthread_mutex_unlock(&lock); return NULL; }
        unsigned char *p = ring[tail]; size_t n = ring_size[tail]; tail = (tail + 1) % RING;
        pthread_cond_signal(&nonfull);
        pthread_mutex_unlock(&lock);
        for (size_t k = 0; k < n; k++) if (p[k] != (unsigned char)(n & 0xff)) { fprintf(stderr, "block corrupted\n"); exit(5); }
        *total += n;
        free(p);
    }
}

static void on_alarm(int sig) {
    (void)sig;
    /* Allocation from a signal handler, possibly while this thread is inside malloc. */
    char *a = malloc(100), *b = calloc(10, 100);
    if (a && b) { memset(a, 1, 100); signals_seen++; }
    free(a); free(b);
}

int main(int argc, char **argv) {
    int with_signals = argc > 1 && strcmp(argv[1], "signals") == 0;
    if (with_signals) {
        struct sigaction sa; memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm; sa.sa_flags = SA_RESTART;
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it = {{0, 200}, {0, 200}};
        setitimer(ITIMER_REAL, &it, NULL);
    }

    pthread_t p[THREADS], c;
    unsigned long long consumed = 0;
    pthread_create(&c, NULL, consumer, &consumed);
    for (int t = 0; t < THREADS; t++) pthread_create(&p[t], NULL, producer, (void *)(uintptr_t)(t + 1));

    /* The main thread allocates in a loop (so that signals land inside malloc), and forks
       while the other threads run. */
    unsigned long long main_sum = 0;
    int forks_ok = 0;
    for (int i = 0; i < 200000; i++) {
        size_t n = 1 + (size_t)(i * 7919) % 700;
        unsigned char *q = malloc(n);
        memset(q, 7, n);
        main_sum += checksum(q, n < 8 ? n : 8) % 1000;
        free(q);
        if (i % 40000 == 20000) {
            pid_t pid = fork();
            if (pid == 0) {
                /* The child's heap is whole: allocate, check, free, and report. */
                unsigned long long s = 0;
                for (int k = 0; k < 20000; k++) {
                    size_t m = 1 + (size_t)k % 5000;
                    unsigned char *r = malloc(m);
                    if (!r) _exit(10);
                    memset(r, 3, m); s += checksum(r, m < 4 ? m : 4) % 7; free(r);
                }
                _exit(s == 0 ? 11 : 0);
            }
            int st = 0;
            waitpid(pid, &st, 0);
            if (WIFEXITED(st) && WEXITSTATUS(st) == 0) forks_ok++;
        }
    }
    for (int t = 0; t < THREADS; t++) pthread_join(p[t], NULL);
    pthread_join(c, NULL);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("consumed %llu\nmain %llu\nforks %d\n", consumed, main_sum, forks_ok);
    if (with_signals) fprintf(stderr, "signals %s %d\n", signals_seen > 0 ? "seen" : "none", (int)signals_seen);
    return 0;
}
