/*
 * malloc-trace: an LD_PRELOAD shim that logs every malloc-family call of a program.
 *
 * Build:  cc -O2 -shared -fPIC -o malloc_trace.so malloc_trace.c
 * Use:    MEMKIT_TRACE=/tmp/out LD_PRELOAD=./malloc_trace.so program ...
 *         writes /tmp/out.<pid> for every process that allocates (forked children too).
 *
 * The calls go on to glibc's own entry points (__libc_malloc and friends), so the shim
 * never calls dlsym and never recurses. Records are appended to a per-process buffer under
 * a spin lock and written out when it fills and at exit.
 *
 * Format (all integers LEB128 varints; pointers as zigzag deltas from the previous pointer
 * of the file, so that nearby addresses take one or two bytes):
 *   header  "MKTRACE1"
 *   record  tag byte: low 3 bits the operation, high 5 bits an alignment (log2) for memalign
 *     0 malloc    size, ptr
 *     1 free      ptr
 *     2 realloc   old ptr, size, new ptr      (old 0: a malloc; new 0 with size 0: a free)
 *     3 calloc    bytes (count * size), ptr
 *     4 memalign  size, ptr                   (posix_memalign, aligned_alloc, memalign, valloc)
 *     5 thread    thread id (Linux tid): the records after it come from that thread
 * A null result is recorded as pointer 0 (the call failed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_memalign(size_t, size_t);

#define BUF_BYTES (1 << 20)
static unsigned char buf[BUF_BYTES];
static size_t used;
static int fd = -1;
static pid_t owner;
static long last_tid = -1;
static uintptr_t last_ptr;
static volatile int lock;

static void spin_lock(void) {
    while (__atomic_exchange_n(&lock, 1, __ATOMIC_ACQUIRE)) {
    }
}
static void spin_unlock(void) { __atomic_store_n(&lock, 0, __ATOMIC_RELEASE); }

static void write_all(const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Opens this process's file (lazily, at the first flush) and writes the buffer. */
static void flush(void) {
    if (used == 0) return;
    if (fd < 0) {
        const char *base = getenv("MEMKIT_TRACE");
        if (!base) {
            used = 0;
            return;
        }
        char path[4096];
        size_t n = strlen(base);
        if (n > sizeof path - 32) n = sizeof path - 32;
        memcpy(path, base, n);
        path[n++] = '.';
        char digits[24];
        int k = 0;
        unsigned long pid = (unsigned long)getpid();
        do {
            digits[k++] = (char)('0' + pid % 10);
            pid /= 10;
        } while (pid);
        while (k) path[n++] = digits[--k];
        path[n] = 0;
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            used = 0;
            return;
        }
        write_all((const unsigned char *)"MKTRACE1", 8);
    }
    write_all(buf, used);
    used = 0;
}

static void put_varint(uint64_t v) {
    while (v >= 0x80) {
        buf[used++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    buf[used++] = (unsigned char)v;
}

static void put_ptr(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int64_t d = (int64_t)(a - last_ptr);
    last_ptr = a;
    put_varint(((uint64_t)d << 1) ^ (uint64_t)(d >> 63));
}

/* Starts a record under the lock the caller took: follows a fork, notes a change of thread. */
static void begin_locked(unsigned tag) {
    pid_t pid = getpid();
    if (pid != owner) {
        /* A new process (a fork): the parent's buffer and file are not ours. */
        owner = pid;
        used = 0;
        fd = -1;
        last_tid = -1;
        last_ptr = 0;
    }
    if (used > BUF_BYTES - 64) flush();
    long tid = syscall(SYS_gettid);
    if (tid != last_tid) {
        last_tid = tid;
        buf[used++] = 5;
        put_varint((uint64_t)tid);
    }
    buf[used++] = (unsigned char)tag;
}

/* Starts a record: takes the lock. */
static void begin(unsigned tag) {
    spin_lock();
    begin_locked(tag);
}

static void end(void) { spin_unlock(); }

void *malloc(size_t size) {
    void *p = __libc_malloc(size);
    begin(0);
    put_varint(size);
    put_ptr(p);
    end();
    return p;
}

void free(void *p) {
    if (!p) return;
    begin(1);
    put_ptr(p);
    end();
    __libc_free(p);
}

void *realloc(void *old, size_t size) {
    /* The lock is held across the call, so that a block realloc frees is not handed out
       and logged by another thread before this record. */
    spin_lock();
    void *p = __libc_realloc(old, size);
    begin_locked(2);
    put_ptr(old);
    put_varint(size);
    put_ptr(p);
    end();
    return p;
}

void *calloc(size_t n, size_t size) {
    void *p = __libc_calloc(n, size);
    begin(3);
    put_varint((uint64_t)n * size);
    put_ptr(p);
    end();
    return p;
}

static void *aligned(size_t align, size_t size) {
    void *p = __libc_memalign(align, size);
    unsigned log2 = 0;
    while (((size_t)1 << log2) < align && log2 < 31) log2++;
    begin(4 | (log2 << 3));
    put_varint(size);
    put_ptr(p);
    end();
    return p;
}

int posix_memalign(void **out, size_t align, size_t size) {
    if (align < sizeof(void *) || (align & (align - 1))) return EINVAL;
    void *p = aligned(align, size);
    if (!p && size) return ENOMEM;
    *out = p;
    return 0;
}
void *aligned_alloc(size_t align, size_t size) { return aligned(align, size); }
void *memalign(size_t align, size_t size) { return aligned(align, size); }
void *valloc(size_t size) { return aligned(4096, size); }
void *pvalloc(size_t size) { return aligned(4096, (size + 4095) & ~(size_t)4095); }

__attribute__((destructor)) static void at_exit(void) {
    spin_lock();
    if (owner == getpid()) flush();
    spin_unlock();
}
