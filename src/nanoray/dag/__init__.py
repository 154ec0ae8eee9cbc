"""Lazy computation graphs (Ray's DAG API): ``.bind()`` builds nodes instead
of running calls; ``.execute()`` submits them all, each once, in dependency
order, and returns the root's ref(s).

    with InputNode() as inp:
        dag = combine.bind(Model.bind(1).forward.bind(inp[0]), g.bind(inp.x))
    nanoray.get(dag.execute(1, x=2))

Nothing here waits: a node's result is an ObjectRef that the nodes after it
take as an argument, so the whole graph is queued at once and runs as its
arguments become ready.  As in Ray, every execute() runs the graph anew,
actors (ClassNode) included; a node bound into several places runs once per
execute()."""

__all__ = ["ClassMethodNode", "ClassNode", "DAGNode", "FunctionNode", "InputAttributeNode",
           "InputNode", "MultiOutputNode"]


class DAGNode:
    """A call not made yet: its target, bound arguments and options."""

    def __init__(self, args, kwargs, options=None):
        self._bound_args = tuple(args)
        self._bound_kwargs = dict(kwargs)
        self._bound_options = dict(options or {})

    def execute(self, *args, **kwargs):
        """Submits the graph ending here; returns this node's result (an
        ObjectRef, a list of them, or an actor handle for a ClassNode)."""
        return self._resolve(_Execution(args, kwargs))

    def _resolve(self, run):
        key = id(self)
        if key not in run.done:
            run.done[key] = self._execute_impl(run)
            run.keep.append(self)               # ids stay unique while this runs
        return run.done[key]

    def _args(self, run):
        return (tuple(_resolve_value(a, run) for a in self._bound_args),
                {k: _resolve_value(v, run) for k, v in self._bound_kwargs.items()})

    def _execute_impl(self, run):
        raise NotImplementedError

    def get_args(self):
        return self._bound_args

    def get_kwargs(self):
        return self._bound_kwargs

    def get_options(self):
        return self._bound_options


class _Execution:
    __slots__ = ("args", "kwargs", "done", "keep")

    def __init__(self, args, kwargs):
        self.args = args
        self.kwargs = kwargs
        self.done = {}
        self.keep = []


def _resolve_value(v, run):
    if isinstance(v, DAGNode):
        return v._resolve(run)
    t = type(v)
    if t is list or t is tuple:
        return t(_resolve_value(x, run) for x in v)
    if t is dict:
        return {k: _resolve_value(x, run) for k, x in v.items()}
    return v


class _BodyNode(DAGNode):
    """A node calling .remote() on a remote function or actor class."""

    def __init__(self, body, args, kwargs, options=None):
        self._body = body
        super().__init__(args, kwargs, options)

    def _execute_impl(self, run):
        args, kwargs = self._args(run)
        body = self._body.options(**self._bound_options) if self._bound_options else self._body
        return body.remote(*args, **kwargs)

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, getattr(self._body, "__name__", "?"))


class FunctionNode(_BodyNode):
    """remote_function.bind(*args): a task."""


class ClassNode(_BodyNode):
    """ActorClass.bind(*args): an actor, created at each execute().  The
    method calls bound on it form a chain, as in Ray: executing one submits
    the calls bound on the actor before it first (a1.inc.bind(2) then
    a1.get.bind(): the get sees the increment)."""

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_body", "_bound_args", "_bound_kwargs",
                                             "_bound_options", "_last_call"):
            raise AttributeError(name)
        return _UnboundMethod(self, name)


class _UnboundMethod:
    """class_node.method: .bind() makes a ClassMethodNode; .options() first."""

    def __init__(self, parent, name, options=None):
        self._parent = parent
        self._name = name
        self._options = options or {}

    def bind(self, *args, **kwargs):
        return ClassMethodNode(self._parent, self._name, args, kwargs, self._options)

    def options(self, **options):
        return _UnboundMethod(self._parent, self._name, dict(self._options, **options))


class ClassMethodNode(DAGNode):
    """actor.method.bind(*args): a call on the actor of a ClassNode (made at
    execute()) or on a live actor handle."""

    def __init__(self, parent, method_name, args, kwargs, options=None):
        self._parent = parent                  # a ClassNode or an ActorHandle
        self._method_name = method_name
        self._prev = None                      # the call bound on that ClassNode before
        if isinstance(parent, ClassNode):
            self._prev = parent.__dict__.get("_last_call")
            parent.__dict__["_last_call"] = self
        super().__init__(args, kwargs, options)

    def _execute_impl(self, run):
        parent = self._parent
        handle = parent._resolve(run) if isinstance(parent, DAGNode) else parent
        if self._prev is not None:
            self._prev._resolve(run)           # submitted first: the actor runs it first
        args, kwargs = self._args(run)
        m = getattr(handle, self._method_name)
        if self._bound_options:
            m = m.options(**self._bound_options)
        return m.remote(*args, **kwargs)

    def __repr__(self):
        return "ClassMethodNode(%s)" % self._method_name


class DAGInputData:
    """What an InputNode stands for when execute() got several arguments."""

    def __init__(self, args, kwargs):
        self.args = args
        self.kwargs = kwargs

    def __getitem__(self, key):
        if isinstance(key, int):
            return self.args[key]
        return self.kwargs[key]

    def __getattr__(self, name):
        if name in ("args", "kwargs"):
            raise AttributeError(name)
        try:
            return self.kwargs[name]
        except KeyError:
            raise AttributeError(name) from None


class InputNode(DAGNode):
    """The graph's input: execute()'s argument (one positional argument),
    or its arguments, indexed by ``inp[0]``, ``inp["x"]`` or ``inp.x``."""

    def __init__(self, *args, **kwargs):
        super().__init__((), {})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _execute_impl(self, run):
        if len(run.args) == 1 and not run.kwargs:
            return run.args[0]
        return DAGInputData(run.args, run.kwargs)

    def __getitem__(self, key):
        return InputAttributeNode(self, key, "__getitem__")

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return InputAttributeNode(self, name, "__getattr__")

    def __repr__(self):
        return "InputNode()"


class InputAttributeNode(DAGNode):
    """inp[key] or inp.name: one part of the input."""

    def __init__(self, input_node, key, accessor):
        self._input = input_node
        self._key = key
        self._accessor = accessor
        super().__init__((), {})

    def _execute_impl(self, run):
        value = self._input._resolve(run)
        if isinstance(value, DAGInputData):
            return value[self._key] if self._accessor == "__getitem__" else getattr(
                value, self._key)
        if self._accessor == "__getitem__":
            return value[self._key]
        if isinstance(value, dict):
            return value[self._key]
        return getattr(value, self._key)

    def __repr__(self):
        return "InputAttributeNode(%r)" % (self._key,)


class MultiOutputNode(DAGNode):
    """Several results at once: execute() returns a list of refs."""

    def __init__(self, nodes, *args, **kwargs):
        self._nodes = list(nodes)
        super().__init__((), {})

    def _execute_impl(self, run):
        return [_resolve_value(n, run) for n in self._nodes]

    def __repr__(self):
        return "MultiOutputNode(%d)" % len(self._nodes)
