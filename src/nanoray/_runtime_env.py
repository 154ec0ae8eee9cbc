"""runtime_env on one machine: env_vars, working_dir and py_modules.

Set at init(), it applies to every worker and actor: the zygote that forks
them starts with it (environment variables, current directory, sys.path),
so it holds from the first import in each process.  Set on an actor, it is
applied in the actor's process for its whole life.  Tasks and actors
submitted from inside a task or actor inherit its runtime_env, merged under
their own (env_vars key by key), as in Ray.

Set on a task, it runs in workers of its own, as in Ray: the scheduler keys
each pool worker by the runtime_env of the first task it runs (key(), a
hash of the environment; none is a key too), and from then on it runs only
tasks of that environment, which it keeps applied for its life (keep()).
A task whose environment no idle worker has gets a fresh one, forked from
the zygote; workers idle for 10 s beyond the pool's size retire.  So what
a task imports from its working_dir or py_modules, or reads from its
environment variables at import time, is that environment's alone, and a
task without a runtime_env never runs in a worker that had one.

What needs a machine of its own (pip, conda, containers, remote URIs) is an
error naming the key: nanoray runs in the driver's Python environment."""

import hashlib
import json
import os
import sys

from nanoray import exceptions
from nanoray._core import _runtime as _rt

# "excludes" filters what Ray uploads of working_dir; here the directory is
# used in place, so nothing is left out (accepted, checked, no effect).
SUPPORTED = ("env_vars", "working_dir", "py_modules", "config", "excludes")

# The runtime_env of the task or actor running in this process (inherited
# by what it submits); None in the driver and between tasks.
current = None
# The one given to init(), which every worker runs with: in the driver and
# (through the zygote) in workers; None if none.
job = None
# The placement group it runs in, as (PlacementGroup, capture child tasks);
# None if none.
current_pg = None


def _sync():
    """Whether a call made here may inherit something, kept where .remote()
    reads it (one C flag per submit, instead of two attribute reads)."""
    _rt.set_inheriting(current is not None or current_pg is not None)


def set_current_pg(value):
    """Sets current_pg (the worker, around a task; an actor, for life)."""
    global current_pg
    current_pg = value
    _sync()


def validate(runtime_env):
    """The normalized runtime_env (paths absolute), or None if empty."""
    if runtime_env is None:
        return None
    if not isinstance(runtime_env, dict):
        raise TypeError("runtime_env must be a dict, got %r" % (type(runtime_env).__name__,))
    bad = [k for k in runtime_env if k not in SUPPORTED]
    if bad:
        raise ValueError(
            "runtime_env key(s) %s are not supported by nanoray, which runs every task in "
            "this machine's Python environment: install packages into it yourself. "
            "Supported: env_vars, working_dir and py_modules (local paths)."
            % ", ".join(repr(k) for k in sorted(bad)))
    out = {}
    env = runtime_env.get("env_vars")
    if env:
        if not isinstance(env, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise TypeError("runtime_env['env_vars'] must be a dict of str to str, got %r"
                            % (env,))
        out["env_vars"] = dict(env)
    ex = runtime_env.get("excludes")
    if ex is not None and (isinstance(ex, str) or not isinstance(ex, (list, tuple)) or
                           not all(isinstance(x, str) for x in ex)):
        raise TypeError("runtime_env['excludes'] must be a list of str, got %r" % (ex,))
    wd = runtime_env.get("working_dir")
    if wd:
        out["working_dir"] = _local_dir(wd, "working_dir")
    mods = runtime_env.get("py_modules")
    if mods:
        if isinstance(mods, (str, os.PathLike)) or not isinstance(mods, (list, tuple)):
            raise TypeError("runtime_env['py_modules'] must be a list of paths, got %r"
                            % (mods,))
        out["py_modules"] = [_local_path(m, "py_modules") for m in mods]
    return out or None


def _local_path(p, key):
    if hasattr(p, "__file__") and hasattr(p, "__name__"):       # a module object
        f = os.path.abspath(p.__file__)
        p = os.path.dirname(f) if os.path.basename(f) == "__init__.py" else f
    p = os.fspath(p)
    if "://" in p:
        raise ValueError("runtime_env[%r]: remote URIs (%s) are not supported by nanoray; "
                         "give a local path" % (key, p))
    p = os.path.abspath(os.path.expanduser(p))
    if not os.path.exists(p):
        raise exceptions.RuntimeEnvSetupError("runtime_env[%r]: %s does not exist" % (key, p))
    return p


def _local_dir(p, key):
    p = _local_path(p, key)
    if not os.path.isdir(p):
        raise exceptions.RuntimeEnvSetupError("runtime_env[%r]: %s is not a directory"
                                              % (key, p))
    return p


def merge(parent, child):
    """child's runtime_env over parent's (env_vars merged key by key)."""
    if not parent:
        return child
    if not child:
        return parent
    out = dict(parent)
    out.update(child)
    if "env_vars" in parent and "env_vars" in child:
        out["env_vars"] = dict(parent["env_vars"], **child["env_vars"])
    return out


def _search_paths(env):
    paths = []
    wd = env.get("working_dir")
    if wd:
        paths.append(wd)
    for m in env.get("py_modules", ()):      # a package directory or a module file:
        paths.append(os.path.dirname(m))      # importable by its name
    return paths


def key(env):
    """The scheduler's key for a task's runtime_env (normalized, as
    validate() and merge() return it): a 63-bit hash of its contents, never
    0 (0 is none), the same in every process."""
    text = json.dumps(env, sort_keys=True, separators=(",", ":"))
    h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return (h & ((1 << 63) - 1)) or 1


# The runtime_env this pool worker runs (applied by keep(), for its life).
kept = None


def keep(env):
    """In a pool worker, before a task of runtime_env env: applies it the
    first time, and keeps it.  The scheduler gives this worker tasks of
    that environment only, once it ran one (see the module's doc)."""
    global kept
    if kept is None:
        apply(env)
        kept = env


def apply(env):
    """Applies env in this process; returns what restore() needs to undo it.
    If it fails part way, what it did is undone before it raises."""
    global current
    saved_env = {}
    cwd = None
    added = []
    previous = current
    try:
        for k, v in env.get("env_vars", {}).items():
            saved_env[k] = os.environ.get(k)
            os.environ[k] = v
        if env.get("working_dir"):
            here = os.getcwd()
            os.chdir(env["working_dir"])
            cwd = here
        added = [p for p in _search_paths(env) if p not in sys.path]
        sys.path[0:0] = added
    except BaseException:
        restore((saved_env, cwd, added, previous))
        raise
    current = merge(current, env)
    _sync()
    return saved_env, cwd, added, previous


def restore(token):
    global current
    saved_env, cwd, added, previous = token
    for k, v in saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if cwd is not None:
        try:
            os.chdir(cwd)
        except OSError:
            pass
    for p in added:
        try:
            sys.path.remove(p)
        except ValueError:
            pass
    current = previous
    _sync()


def for_zygote(env):
    """(environment variables, working directory, extra sys.path entries)
    the zygote starts with for an init-level runtime_env."""
    if not env:
        return {}, None, []
    return dict(env.get("env_vars", {})), env.get("working_dir"), _search_paths(env)
