/*
 * Heap interposer for the real-time proofs: the test executable defines malloc, calloc,
 * realloc, free, posix_memalign, aligned_alloc and memalign, so every heap operation of the
 * process (C, C++ operator new through malloc, Rust's System allocator, libstdc++) comes
 * here first. Each is counted in a per-thread counter (initial-exec TLS in the executable: no
 * allocation, no system call), then forwarded to glibc's own __libc_* functions.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static __thread uint64_t heap_ops;

uint64_t probe_thread_heap_ops(void) { return heap_ops; }

void *malloc(size_t n) { heap_ops++; return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { heap_ops++; return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { heap_ops++; return __libc_realloc(p, n); }
void free(void *p) { if (p) heap_ops++; __libc_free(p); }
void *memalign(size_t a, size_t n) { heap_ops++; return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { heap_ops++; return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    void *p;
    heap_ops++;
    p = __libc_memalign(a, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
