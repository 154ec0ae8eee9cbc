"""Exceptions raised by nanoray, with Ray's names and hierarchy.

An exception raised inside a task reaches the caller of get() as a
RayTaskError that is *also* an instance of the original exception's type
(see RayTaskError.as_instanceof_cause), so ``except ValueError`` around
``get()`` works as it does around a local call, and the message carries the
remote traceback.
"""

__all__ = [
    "RayError", "RaySystemError", "RayTaskError", "TaskError", "GetTimeoutError",
    "ObjectStoreFullError", "ObjectLostError", "ObjectFreedError", "OwnerDiedError",
    "ObjectFetchTimedOutError", "ReferenceCountingAssertionError",
    "ObjectReconstructionFailedError", "ObjectReconstructionFailedMaxAttemptsExceededError",
    "ObjectReconstructionFailedLineageEvictedError", "WorkerCrashedError",
    "TaskCancelledError", "RayActorError", "ActorDiedError", "ActorUnavailableError",
    "ActorUnschedulableError", "TaskUnschedulableError", "PendingCallsLimitExceeded",
    "OutOfMemoryError", "OutOfDiskError", "NodeDiedError", "LocalRayletDiedError",
    "RuntimeEnvSetupError", "TaskPlacementGroupRemoved", "ActorPlacementGroupRemoved",
    "AsyncioActorExit", "CrossLanguageError", "UnserializableException",
    "StreamingGeneratorReplayInconsistentError", "ActorAlreadyExistsError",
]


class RayError(Exception):
    """Base class of nanoray's errors."""


class RaySystemError(RayError):
    """The runtime itself failed or was used after shutdown."""


class GetTimeoutError(RayError, TimeoutError):
    """get() or wait() ran out of time."""


class ObjectStoreFullError(RayError, MemoryError):
    """The shared object store has no block large enough."""


class ObjectLostError(RayError):
    """An object's value is gone (freed, or its id never existed)."""


class ObjectFetchTimedOutError(ObjectLostError):
    """Fetching an object timed out (Ray's name; not raised on one machine)."""


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """An object was freed while a reference to it was still in use."""


class ObjectFreedError(ObjectLostError):
    """The object was freed explicitly."""


class OwnerDiedError(ObjectLostError):
    """The process that owned the object died, and the value went with it."""


class ObjectReconstructionFailedError(ObjectLostError):
    """A lost object could not be rebuilt from its lineage."""


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectReconstructionFailedError):
    """A lost object could not be rebuilt: its task ran out of retries."""


class ObjectReconstructionFailedLineageEvictedError(ObjectReconstructionFailedError):
    """A lost object could not be rebuilt: its lineage was evicted."""


class StreamingGeneratorReplayInconsistentError(RayError):
    """A streaming generator re-run after its worker died yielded fewer
    values than the first run had (it is not deterministic)."""


class OutOfMemoryError(RayError):
    """The machine ran out of memory while running the task."""


class OutOfDiskError(RayError):
    """The disk is full (spilling could not write)."""


class NodeDiedError(RayError):
    """The node running the task died."""


class LocalRayletDiedError(RayError):
    """The local scheduler died (on one machine: the runtime ended)."""


class RuntimeEnvSetupError(RayError):
    """The task's or actor's runtime_env could not be set up."""


class TaskUnschedulableError(RayError):
    """The task can never be scheduled."""


class ActorUnschedulableError(RayError):
    """The actor can never be scheduled."""


class TaskPlacementGroupRemoved(RayError):
    """The placement group the task was scheduled in was removed."""


class ActorPlacementGroupRemoved(RayError):
    """The placement group the actor was scheduled in was removed."""


class AsyncioActorExit(RayError):
    """Raised to end an async actor (exit_actor() inside a coroutine)."""


class CrossLanguageError(RayError):
    """A call across languages failed (Ray's name; nanoray is Python only)."""


class UnserializableException(RayError):
    """An exception that could not be pickled, kept as its text."""


class WorkerCrashedError(RayError):
    """The worker running a task died, and the task had no retries left."""

    def __init__(self, message="The worker died unexpectedly while executing this task."):
        super().__init__(message)


class TaskCancelledError(RayError):
    """The task was cancelled (nanoray.cancel)."""

    def __init__(self, task_id=None, error_message=None):
        self.task_id = task_id
        self.error_message = error_message
        if error_message:
            text = error_message
        elif task_id is not None:
            text = "Task: %s was cancelled." % (task_id,)
        else:
            text = "This task or its dependency was cancelled by nanoray.cancel"
        super().__init__(text)

    def __reduce__(self):
        return (type(self), (self.task_id, self.error_message))


class RayActorError(RayError):
    """An actor could not run a call: it died, or never started."""

    def __init__(self, message="The actor died unexpectedly before finishing this task.",
                 cause=None):
        self.cause = cause
        self.error_msg = message
        text = message
        if cause is not None:
            text += "\n" + str(cause)
        super().__init__(text)

    def __reduce__(self):
        return (type(self), (self.error_msg, self.cause))


class ActorDiedError(RayActorError):
    """The actor is dead: killed, crashed, exited, or its __init__ raised
    (then .cause is that error, a RayTaskError with the remote traceback)."""


class ActorUnavailableError(RayActorError):
    """The actor cannot take calls right now (e.g. it is restarting)."""


class ActorAlreadyExistsError(ValueError, RayError):
    """An actor of that name already lives in that namespace (a ValueError
    too, as in Ray, so older code catching ValueError still does)."""

    def __init__(self, error_message):
        super().__init__(error_message)
        self.error_message = error_message


class PendingCallsLimitExceeded(RayError):
    """More calls are queued on the actor than its max_pending_calls."""


class RayTaskError(RayError):
    """A task raised; carries the remote traceback and the original exception."""

    def __init__(self, function_name, traceback_str, cause, pid, cause_repr=None):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        self.cause_repr = cause_repr if cause_repr is not None else _safe_repr(cause)
        # Not super(): in the dual class the next __init__ would be the cause's.
        Exception.__init__(self, self._message())

    def _message(self):
        head = "nanoray::%s() (pid=%s)" % (self.function_name, self.pid)
        body = self.traceback_str.rstrip() if self.traceback_str else self.cause_repr
        return head + "\n" + body

    def __str__(self):
        return self._message()

    def __reduce__(self):
        return (RayTaskError, (self.function_name, self.traceback_str, self.cause,
                               self.pid, self.cause_repr))

    def as_instanceof_cause(self):
        """This error as an instance of a class deriving from both RayTaskError
        and the cause's type, so callers can catch the original type."""
        cause = self.cause
        # Only Exception subclasses: a SystemExit or KeyboardInterrupt raised
        # from get() would end the caller's program instead of failing a call.
        if cause is None or isinstance(cause, RayTaskError) or not isinstance(cause, Exception):
            return self
        cause_cls = type(cause)
        cls = _dual_classes.get(cause_cls)
        if cls is None:
            try:
                cls = type("RayTaskError(%s)" % cause_cls.__name__, (RayTaskError, cause_cls), {
                    "__init__": _dual_init,
                    "__str__": RayTaskError.__str__,
                    "__reduce__": RayTaskError.__reduce__,
                    "__module__": RayTaskError.__module__,
                })
            except TypeError:          # layouts that cannot be combined
                return self
            _dual_classes[cause_cls] = cls
        try:
            err = cls(self.function_name, self.traceback_str, cause, self.pid, self.cause_repr)
        except Exception:
            return self
        err.args = (self._message(),)
        return err


def _as_stdlib(e):
    """For the stdlib drop-ins: a task's exception as the function's own,
    with the remote traceback chained as __cause__ (multiprocessing's
    RemoteTraceback), as multiprocessing and concurrent.futures raise it."""
    if isinstance(e, RayTaskError) and isinstance(e.cause, BaseException):
        return _with_remote_traceback(e.cause, e.traceback_str)
    return e


def _with_remote_traceback(error, traceback_str):
    """error with the remote traceback chained as __cause__, as
    multiprocessing raises it."""
    if traceback_str:
        from multiprocessing.pool import RemoteTraceback
        error.__cause__ = RemoteTraceback(traceback_str)
    return error


_READ_ONLY_NOTE = (
    "nanoray: arrays from get(), and the array arguments of tasks, are read-only views of "
    "the object store. For a writable view that copies only the pages you change, use "
    "nanoray.get(ref, writable=True), or @nanoray.remote(writable_args=True) for a task's "
    "arguments; or copy the array (x.copy()).")
_READ_ONLY_MARKS = ("read-only", "WRITEABLE flag")


def _note_read_only(e):
    """Adds a note to numpy's error for a write to a read-only array (once),
    naming the ways to a writable one."""
    if isinstance(e, (ValueError, TypeError)) and hasattr(e, "add_note"):
        try:
            msg = str(e)
            if any(m in msg for m in _READ_ONLY_MARKS) and \
                    _READ_ONLY_NOTE not in getattr(e, "__notes__", ()):
                e.add_note(_READ_ONLY_NOTE)
        except Exception:
            pass                         # an exception whose str() fails: left as it is


def _install_read_only_hint():
    """The driver's uncaught errors get that note too (sys.excepthook, once,
    in front of whatever hook is there)."""
    import sys
    prev = sys.excepthook
    if getattr(prev, "_nanoray_read_only", False):
        return

    def hook(tp, value, tb):
        try:
            _note_read_only(value)
        except Exception:
            pass
        prev(tp, value, tb)
    hook._nanoray_read_only = True
    sys.excepthook = hook


def _safe_repr(obj):
    try:
        return repr(obj)
    except Exception:
        return "<%s object (repr failed)>" % type(obj).__name__


def _dual_init(self, function_name, traceback_str, cause, pid, cause_repr=None):
    RayTaskError.__init__(self, function_name, traceback_str, cause, pid, cause_repr)
    # Copy the cause's attributes (e.g. OSError.errno) so handlers see them.
    try:
        self.__dict__.update({k: v for k, v in vars(cause).items() if k not in self.__dict__})
    except TypeError:
        pass
    if isinstance(cause, OSError):                # C-level fields, not in __dict__
        for name in ("errno", "strerror", "filename", "filename2"):
            try:
                setattr(self, name, getattr(cause, name))
            except (AttributeError, TypeError):
                pass


_dual_classes = {}

# Ray's alias.
TaskError = RayTaskError
