"""inspect_serializability: which part of an object stops it from being
pickled (Ray's ``ray.util.inspect_serializability``)."""

import inspect

__all__ = ["FailureTuple", "inspect_serializability"]


class FailureTuple:
    """One object that cannot be pickled: the object, the names leading to
    it from the inspected one (path), and the object that refers to it."""

    def __init__(self, obj, path, parent):
        self.obj = obj
        self.path = tuple(path)
        self.parent = parent

    @property
    def name(self):
        return self.path[-1] if self.path else None

    def __repr__(self):
        names = [str(p) for p in self.path] or ["unknown"]
        return "FailTuple(%s [path=%s, obj=%r, parent=%r])" % (
            names[-1], " -> ".join(names), self.obj, self.parent)


def _children(obj):
    """(name, value) of what obj refers to: a function's globals and
    closure cells, else its attributes (not dunders, not builtins)."""
    if inspect.isfunction(obj):
        cv = inspect.getclosurevars(obj)
        return list(cv.globals.items()) + list(cv.nonlocals.items())
    try:
        members = inspect.getmembers(obj)
    except Exception:
        members = list(getattr(obj, "__dict__", {}).items())
    return [(n, v) for n, v in members
            if not (n.startswith("__") and n.endswith("__")) and not inspect.isbuiltin(v)]


def inspect_serializability(base_obj, name=None, depth=3, print_file=None):
    """(True, set()) when base_obj pickles; else (False, failures): the
    objects found, up to `depth` references down, that do not pickle on
    their own.  Prints what it checks to print_file (stdout by default)."""
    from nanoray import cloudpickle as cp
    failures = set()

    def out(level, text):
        print("    " * level + text, file=print_file)

    def visit(obj, name, level, parent, path):
        try:
            cp.dumps(obj)
            return True
        except Exception as e:
            out(level, "!!! FAIL serialization: %s" % (e,))
        here = path + ((name,) if name is not None else ())
        culprit = False
        if level < depth:
            with_label = "closure of %r" % (obj.__qualname__,) if inspect.isfunction(obj) \
                else "members of %s" % (type(obj).__name__,)
            out(level, "Inspecting %s:" % with_label)
            for cname, child in _children(obj):
                out(level + 1, "Serializing %r %s..." % (cname, _short(child)))
                if not visit(child, cname, level + 1, obj, here):
                    culprit = True
                    break
        if not culprit:
            failures.add(FailureTuple(obj, here, parent))
        return False

    title = "Checking Serializability of %s" % _short(base_obj)
    out(0, "=" * min(len(title), 80))
    out(0, title)
    out(0, "=" * min(len(title), 80))
    ok = visit(base_obj, name, 0, None, ())
    if not ok:
        out(0, "=" * min(len(title), 80))
        out(0, "Found %d non-serializable object(s): %s"
            % (len(failures), ", ".join(repr(f) for f in failures)))
    return ok, failures


def _short(obj):
    try:
        text = repr(obj)
    except Exception:
        text = "<%s object>" % type(obj).__name__
    return text if len(text) <= 80 else text[:77] + "..."
