/* What a first write into fresh memfd pages costs, and what the kernel
 * offers against it (the measurements behind csrc/nr_prefault.h).
 *
 *     cc -O2 -o /tmp/cold_pages benchmarks/cold_pages.c -lpthread && /tmp/cold_pages [rounds]
 *
 * Each line copies 256 MiB into a fresh memfd mapped MAP_SHARED (GB/s of
 * the copy, or of the whole when a step comes before it):
 *   first          memcpy into never-touched pages (a fault and a zeroed page each)
 *   2 threads      the same copy split over two threads
 *   falloc+copy    fallocate the range first, then copy (timed together)
 *   populate+copy  MADV_POPULATE_WRITE first, then copy (timed together)
 *   prep           the prefault thread's step alone: fallocate twice (allocate,
 *                  then zero) and a read per 64 KiB, in 4 MiB chunks
 *   after prep, same mapping        copy into pages prep made ready here
 *   after prep, other mapping       copy from another mapping (a worker): faults
 *   after prep, other, touch+copy   the same, reading a byte per 64 KiB first
 *   warm / warm, touch+copy         copy into pages already mapped
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define N (256ull << 20)
#define CHUNK (4ull << 20)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static void touch(const char *p, size_t n) {
    for (size_t o = 0; o < n; o += 65536) (void)*(const volatile char *)(p + o);
}
static char *fresh(int *fd) {
    *fd = memfd_create("cold", MFD_CLOEXEC);
    if (*fd < 0 || ftruncate(*fd, N) != 0) { perror("memfd"); exit(1); }
    return mmap(NULL, N, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
}
static char *remap(int fd) { return mmap(NULL, N, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0); }
static void prep(int fd, char *p) {
    for (size_t o = 0; o < N; o += CHUNK) {
        fallocate(fd, 0, o, CHUNK);
        fallocate(fd, 0, o, CHUNK);
        touch(p + o, CHUNK);
    }
}
typedef struct { char *d; const char *s; size_t n; } job_t;
static void *copy_job(void *a) { job_t *j = a; memcpy(j->d, j->s, j->n); return NULL; }

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 3;
    char *src = malloc(N);
    memset(src, 1, N);
    for (int r = 0; r < rounds; r++) {
        int fd; char *p, *q; double t, a, b;
        p = fresh(&fd); t = now(); memcpy(p, src, N); a = now() - t;
        t = now(); memcpy(p, src, N); b = now() - t;
        t = now(); touch(p, N); memcpy(p, src, N); double c = now() - t;
        munmap(p, N); close(fd);
        printf("first %.2f | warm %.2f | warm, touch+copy %.2f", N / a / 1e9, N / b / 1e9, N / c / 1e9);

        p = fresh(&fd); t = now();
        { pthread_t th; job_t j0 = {p, src, N / 2}, j1 = {p + N / 2, src + N / 2, N / 2};
          pthread_create(&th, NULL, copy_job, &j1); copy_job(&j0); pthread_join(th, NULL); }
        a = now() - t; munmap(p, N); close(fd);
        printf(" | 2 threads %.2f", N / a / 1e9);

        p = fresh(&fd); t = now(); fallocate(fd, 0, 0, N); memcpy(p, src, N); a = now() - t;
        munmap(p, N); close(fd);
        printf(" | falloc+copy %.2f", N / a / 1e9);

        p = fresh(&fd); t = now(); madvise(p, N, MADV_POPULATE_WRITE); memcpy(p, src, N);
        a = now() - t; munmap(p, N); close(fd);
        printf(" | populate+copy %.2f\n", N / a / 1e9);

        p = fresh(&fd); t = now(); prep(fd, p); a = now() - t;
        t = now(); memcpy(p, src, N); b = now() - t;
        q = remap(fd); t = now(); memcpy(q, src, N); c = now() - t; munmap(q, N);
        q = remap(fd); t = now(); touch(q, N); memcpy(q, src, N); double d = now() - t; munmap(q, N);
        munmap(p, N); close(fd);
        printf("  prep %.2f | after prep, same mapping %.2f | other mapping %.2f | other, touch+copy %.2f\n",
               N / a / 1e9, N / b / 1e9, N / c / 1e9, N / d / 1e9);
    }
    return 0;
}
