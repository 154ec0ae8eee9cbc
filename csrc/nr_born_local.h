/* nr_born_local: this process's side of arrays born in the arena (the
 * design is in nr_born.h): numpy's allocator functions, the table of the
 * born blocks this process's arrays live in, handing one to the store
 * (mapping its pages copy-on-write), and fork.  Plain C: the handler
 * structure below is numpy's PyDataMem_Handler, version 1 (NEP 49), laid
 * out as numpy's ndarraytypes.h declares it; rt/born.pyx wraps it in the
 * "mem_handler" capsule and installs it. */
#ifndef NR_BORN_LOCAL_H
#define NR_BORN_LOCAL_H

#include "nr_born.h"

typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr, size_t size);
} nr_np_allocator_t;

typedef struct {
    char name[127];
    uint8_t version;               /* 1 */
    nr_np_allocator_t allocator;
} nr_np_handler_t;

/* What this process counted (tests and benchmarks). */
typedef struct {
    uint64_t born, born_bytes;         /* allocations served from the arena */
    uint64_t fallbacks;                /* large ones the arena had no room for */
    uint64_t handoffs, handoff_bytes;  /* blocks handed to the store without a copy */
    uint64_t frees;                    /* born blocks whose array was freed here */
    uint64_t live, live_bytes;         /* born blocks this process's arrays hold now */
    uint64_t remap_failures;           /* mmap refused: the block is kept, never reused */
    uint64_t fork_copies;              /* blocks copied out of the region before a fork */
    uint64_t settled;                  /* lazy hand-offs whose array outlived the task */
} nr_born_stats_t;

/* The handler to install (its allocator calls `prev` for what is not
 * born).  init: this process (region r, mapped from its memfd) serves
 * allocations of at least `threshold` bytes from the arena. */
extern nr_np_handler_t nr_born_handler;
int nr_born_init(nr_region_t *r, uint64_t threshold, const nr_np_allocator_t *prev);
/* Turns allocation from the arena off (1) or on (0); frees still work. */
void nr_born_pause(int paused);

/* Whether this thread has installed the handler (a thread-local flag). */
int nr_born_thread_ready(void);
void nr_born_thread_set(void);

/* Serialization: 1 when [ptr, ptr + len) lies in a born block of a live
 * array of this process that was never handed to the store (*block: its
 * payload offset); 0 otherwise. */
int nr_born_find(const char *ptr, uint64_t len, uint64_t *block);
/* Hands the block to the store: its pages are mapped copy-on-write here,
 * so the array's later writes stay private.  0, or -1 (the caller copies).
 * lazy: not yet, nr_born_settle will (no user code runs in between: a
 * task's result, sealed by the one thread of the process).  Remapping
 * drops the pages from this process's page tables, and faulting 4 KiB
 * shmem pages in again costs 10x a warm write: a result freed before
 * the settle (a temporary returned, the common case) keeps them. */
int nr_born_handoff(uint64_t block, int lazy);
/* The arrays handed off lazily that are still alive get their
 * copy-on-write mapping now; returns how many. */
int nr_born_settle(void);
/* 1 when this process does not see the store's bytes of region range
 * [off, off + len) through its mapping of the region (a handed-off
 * array's private pages, or a forked child's copies): read them through
 * another mapping. */
int nr_born_hidden(uint64_t off, uint64_t len);
/* os.fork(): before, every born range of this process is copied into
 * anonymous memory at the same address (so that the child gets it copy on
 * write, as any memory: it neither sees the parent's later writes nor
 * writes into its arrays); after, in the child, those arrays are the
 * parent's blocks (never given back here), and the child allocates no
 * born blocks (it is not the region's process). */
void nr_born_before_fork(void);
void nr_born_after_fork_child(void);
void nr_born_get_stats(nr_born_stats_t *s);

#endif
