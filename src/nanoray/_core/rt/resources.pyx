# Resources beyond CPUs: defined at init, asked for by tasks and actors,
# held by the process running them (csrc/nr_sched.c schedules them).
# Included by _runtime.pyx: one extension module, one concern per file.
#
# Kinds (NR_RES): 1 GPU (milli-GPUs: fractions share a device; one or more
# take whole devices), 2 memory (MiB), 3.. custom resources (milli-units).

MEMORY_UNIT = 1 << 20                 # memory is counted in MiB, totals and asks rounded up
CUSTOM_FIRST = 3

# The devices this process may use, as the driver saw them: GPU k of the
# runtime is the k-th of CUDA_VISIBLE_DEVICES when it was set (Ray's
# numbering), else device k.  Read once, before any task changes it.
_visible_at_start = os.environ.get("CUDA_VISIBLE_DEVICES")


cdef list _device_ids(uint32_t mask):
    """The ids of the GPUs in mask, as CUDA_VISIBLE_DEVICES names them."""
    ids = [d for d in range(32) if mask >> d & 1]
    if _visible_at_start:
        base = [x.strip() for x in _visible_at_start.split(",") if x.strip()]
        return [base[d] if d < len(base) else str(d) for d in ids]
    return [str(d) for d in ids]

cdef dict _kinds_cache = {}       # session -> {name: kind}


def define_resources(Region reg, dict totals):
    """At init: {"GPU": devices, "memory": bytes, name: units}."""
    cdef uint32_t k = CUSTOM_FIRST
    cdef uint32_t idx
    cdef int64_t amount
    for name, value in totals.items():
        if name == "GPU":
            idx, amount = NR_RES_GPU, <int64_t>value * 1000
        elif name == "memory":
            idx, amount = NR_RES_MEM, <int64_t>(-(-int(value) // MEMORY_UNIT))
        else:
            if k >= NR_RES:
                raise ValueError("nanoray schedules at most %d custom resources; got %s"
                                 % (NR_RES - CUSTOM_FIRST, sorted(n for n in totals
                                                                 if n not in ("GPU", "memory"))))
            idx, amount = k, <int64_t>round(value * 1000)
            k += 1
        if len(name.encode()) >= 32:
            raise ValueError("resource names are at most 31 bytes: %r" % (name,))
        nr_resource_define(&reg.r, idx, name.encode(), amount)
    _kinds_cache.pop(reg.session, None)


cdef dict _kinds(Region reg):
    kinds = _kinds_cache.get(reg.session)
    if kinds is None:
        kinds = {}
        for k in range(1, NR_RES):
            name = (<bytes>reg.r.hdr.res_names[k]).decode()
            if name:
                kinds[name] = k
        _kinds_cache[reg.session] = kinds
    return kinds


cdef object _from_units(uint32_t k, int64_t v):
    if k == NR_RES_MEM:
        return float(v * MEMORY_UNIT)
    return v / 1000.0


def resource_table(Region reg=None):
    """{name: (total, available)} of every resource, CPUs first (Ray's units:
    memory in bytes)."""
    if reg is None:
        reg = _running()
    cdef int64_t tot[NR_RES]
    cdef int64_t av[NR_RES]
    nr_resources(&reg.r, tot, av)
    out = {"CPU": (tot[0] / 1000.0, av[0] / 1000.0)}
    for name, k in _kinds(reg).items():
        out[name] = (_from_units(k, tot[k]), _from_units(k, av[k]))
    return out


def demand(dict resources):
    """(tuple of NR_RES amounts, or None; names this runtime lacks) for a
    call's {name: amount} (GPU in devices, memory in bytes)."""
    cdef Region reg = _running()
    kinds = _kinds(reg)
    vec = [0] * NR_RES
    missing = []
    for name, amount in resources.items():
        if not amount:
            continue
        k = kinds.get(name)
        if k is None:
            missing.append(name)
            continue
        if k == NR_RES_MEM:
            vec[k] = max(1, -(-int(amount) // MEMORY_UNIT))
        else:
            vec[k] = int(round(amount * 1000))
    return (tuple(vec) if any(vec) else None), missing


cdef void _fill_res(object res, int32_t *out) except *:
    cdef int i
    for i in range(NR_RES):
        out[i] = res[i] if res is not None else 0


def current_gpu_ids():
    """The GPU devices the running task (or this actor) holds."""
    cdef Region reg = _region
    cdef uint32_t mask = 0
    if reg is None:
        return []
    t = current_task()
    if _actor_process:
        mask = nr_proc(&reg.r, _slot).gpu_mask
    elif t is not None:
        mask = nr_task(&reg.r, <uint32_t>(t & 0xFFFFFFFF)).gpu_mask
    return [_gpu_id(x) for x in _device_ids(mask)]


cdef object _gpu_id(str x):
    try:
        return int(x)
    except ValueError:
        return x                          # a UUID (GPU-...) stays a str, as in Ray


def current_resources():
    """{name: amount} the running task (or this actor) was granted."""
    cdef Region reg = _region
    if reg is None:
        return {}
    cdef nr_task_t *task
    cdef nr_proc_t *p
    out = {}
    kinds = _kinds(reg)
    t = current_task()
    if _actor_process:
        p = nr_proc(&reg.r, _slot)
        if p.cpus_held:
            out["CPU"] = p.cpus_held / 1000.0
        for name, k in kinds.items():
            if p.res_held[k]:
                out[name] = _from_units(k, p.res_held[k])
    elif t is not None:
        task = nr_task(&reg.r, <uint32_t>(t & 0xFFFFFFFF))
        if task.cpus:
            out["CPU"] = task.cpus / 1000.0
        for name, k in kinds.items():
            if task.res_mask >> k & 1:
                out[name] = _from_units(k, task.res[k])
    return out


cdef object _set_visible_gpus(uint32_t mask):
    """CUDA_VISIBLE_DEVICES for the GPUs held; returns the value it had."""
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(_device_ids(mask))
    return old


cdef void _restore_visible_gpus(object old) except *:
    if old is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = old


# -- placement groups (csrc/nr_pg.c) ------------------------------------------

MAX_PLACEMENT_GROUPS = NR_MAX_PG          # bundles reserved at once
POOL_ANY = NR_POOL_ANY


def pg_create(list cpus, list res):
    """Reserves, for each bundle b, cpus[b] (milli) and res[b] (NR_RES
    amounts or None).  Returns (the group's pool, each bundle's pool), or
    (0, None) when the table has fewer free slots than bundles."""
    cdef Region reg = _running()
    cdef uint32_t nb = len(cpus), b
    cdef int32_t *cv
    cdef int32_t *rv
    cdef uint32_t *slots
    cdef uint64_t pool
    if nb == 0 or nb > NR_MAX_PG or len(res) != nb:
        return 0, None
    cv = <int32_t *>malloc(4 * nb * (NR_RES + 2))
    if cv == NULL:
        raise MemoryError()
    rv, slots = cv + nb, <uint32_t *>(cv + nb * (NR_RES + 1))
    try:
        for b in range(nb):
            cv[b] = cpus[b]
            _fill_res(res[b], &rv[b * NR_RES])
        pool = nr_pg_create(&reg.r, nb, cv, rv, slots)
        if not pool:
            return 0, None
        return pool, [((pool >> 32) << 32) | (slots[b] + 1) for b in range(nb)]
    finally:
        free(cv)


def pg_remove(uint64_t pool):
    return nr_pg_remove(&_running().r, pool)


def pg_state(uint64_t pool):
    """NR_PG_* (1 pending, 2 created), -1 once removed."""
    return nr_pg_state(&_running().r, pool)


def pg_tasks(uint64_t pool):
    """(session, task, generation) of the group's tasks that have not started."""
    cdef Region reg = _running()
    return [(reg.session, <uint32_t>(k & 0xFFFFFFFF), <uint32_t>(k >> 32))
            for k in _list_tasks(reg, nr_pg_tasks, pool)]


def pg_set_gone_error(Region reg, err):
    """At init: what the tasks of a removed group fail with."""
    ref = put_pickled(reg, _pickle(err, True), True)     # pinned: C copies its payload
    nr_pg_set_gone_error(&reg.r, (<ObjectRef>ref)._id)


def pg_fits(uint64_t pool, int32_t cpus, tuple res):
    """True if the live group reserved at least this much."""
    cdef Region reg = _running()
    cdef int32_t resv[NR_RES]
    _fill_res(res, resv)
    return bool(nr_pg_fits(&reg.r, pool, cpus, resv))
