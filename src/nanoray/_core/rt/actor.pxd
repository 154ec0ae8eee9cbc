# Actors, the process side and the caller's (rt/actor.pyx).

cdef class _Constructor:
    cdef object cls                   # the actor class, called by the creation task
