# Declarations of csrc/nr_actor.h: actors on the shared scheduler.
from libc.stdint cimport uint32_t, int32_t, uint64_t
from nanoray._core.region cimport nr_region_t, nr_proc_t

cdef extern from "nr_actor.h" nogil:
    enum:
        NR_ACTOR_CREATED
        NR_ACTOR_ORPHANED
        NR_ACTOR_DEAD
        NR_ACTOR_NO_RESTART
        NR_ACTOR_KILLED
        NR_ACTOR_DETACHED
        NR_ACTOR_UNORDERED
        NR_ACTOR_INFEASIBLE
        NR_ACTOR_OWNER_DIED
        NR_NAME_MAX

    ctypedef struct nr_name_t:
        uint64_t handle_obj  # 0: a free entry
        uint32_t slot1       # the actor's slot + 1
        uint32_t gen         # its generation
        char key[112]        # "namespace\x1fname"

    int nr_actor_create(nr_region_t *r, uint64_t handle_obj, int32_t max_restarts,
                        int32_t cpus_milli, const int32_t *res, uint64_t pool, uint32_t flags,
                        const char *key, uint32_t *gen_out, uint64_t *existing)
    int nr_actor_lookup(nr_region_t *r, const char *key, uint64_t *handle_obj, uint32_t *slot,
                        uint32_t *gen)
    int nr_actor_die(nr_region_t *r, uint32_t slot, uint32_t gen, uint64_t death_obj)
    int32_t nr_actor_kill(nr_region_t *r, uint32_t slot, uint32_t gen, int no_restart)
    int nr_actor_reap(nr_region_t *r, uint32_t slot, uint64_t death_obj, uint64_t unavail_obj)
    int nr_actor_info(nr_region_t *r, uint32_t slot, uint32_t gen, uint32_t *flags,
                      uint32_t *restarts, int32_t *pid)
