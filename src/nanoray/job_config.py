"""JobConfig and LoggingConfig: init(job_config=, logging_config=) as in Ray.
A job_config's runtime_env and namespace are used (init()'s own arguments
win); the rest is accepted for Ray code to run unchanged."""

import json
import logging
import sys
import time

__all__ = ["JobConfig", "LoggingConfig"]

# Ray's init() arguments that change nothing on one machine: accepted so
# that Ray code runs unchanged (a job_config's runtime_env and namespace are
# used), and passed on to Ray by the Ray backend.
RAY_ONLY_INIT = frozenset((
    "labels", "local_mode", "job_config", "logging_format", "logging_config",
    "enable_resource_isolation", "cgroup_path", "system_reserved_cpu",
    "system_reserved_memory", "proxy_server_url", "_enable_object_reconstruction",
    "_plasma_directory", "_node_ip_address", "_driver_object_store_memory", "_memory",
    "_redis_username", "_redis_password", "_temp_dir", "_metrics_export_port",
    "_tracing_startup_hook", "_node_name", "_skip_env_hook"))


def ray_only_args(kwargs, runtime_env, namespace):
    """Takes Ray's init() arguments out of kwargs: (them, runtime_env,
    namespace), a job_config's applied where init() gives none."""
    ray_only = {k: kwargs.pop(k) for k in list(kwargs) if k in RAY_ONLY_INIT}
    job_config = ray_only.get("job_config")
    if job_config is not None:               # Ray's JobConfig, or this module's
        runtime_env = runtime_env or getattr(job_config, "runtime_env", None) or None
        namespace = namespace or getattr(job_config, "ray_namespace", None)
    return ray_only, runtime_env, namespace


class JobConfig:
    """Ray's per-job settings: runtime_env, ray_namespace and metadata are kept."""

    def __init__(self, jvm_options=None, code_search_path=None, runtime_env=None,
                 _client_job=False, metadata=None, ray_namespace=None,
                 default_actor_lifetime="non_detached", _py_driver_sys_path=None):
        self.jvm_options = jvm_options or []
        self.code_search_path = code_search_path or []
        self.metadata = dict(metadata or {})
        self.ray_namespace = ray_namespace
        self.default_actor_lifetime = default_actor_lifetime
        self.runtime_env = None
        self.set_runtime_env(runtime_env)

    def set_runtime_env(self, runtime_env, validate=False):
        from nanoray import _runtime_env
        if validate:
            _runtime_env.validate(runtime_env)
        self.runtime_env = dict(runtime_env) if runtime_env else None

    def set_ray_namespace(self, ray_namespace):
        self.ray_namespace = ray_namespace

    def set_metadata(self, key, value):
        self.metadata[key] = value

    def set_default_actor_lifetime(self, default_actor_lifetime):
        self.default_actor_lifetime = default_actor_lifetime


class LoggingConfig:
    """init(logging_config=): as in Ray, the root logger of the driver and
    of every worker logs at log_level to stderr, each record in one line of
    TEXT (Ray's layout) or JSON, with the job, worker, node and (in a task)
    the task's ids and name."""

    def __init__(self, encoding="TEXT", log_level="INFO", additional_log_standard_attrs=None):
        if encoding not in ("TEXT", "JSON"):
            raise ValueError("encoding must be 'TEXT' or 'JSON', got %r" % (encoding,))
        logging._checkLevel(log_level)        # ValueError here, as Ray: not in every worker
        attrs = list(additional_log_standard_attrs or [])
        standard = vars(logging.LogRecord("", 0, "", 0, "", None, None))
        bad = [a for a in attrs if a not in standard]
        if bad:
            raise ValueError("additional_log_standard_attrs must be LogRecord attributes; "
                             "not: %s" % ", ".join(map(str, bad)))
        self.encoding = encoding
        self.log_level = log_level
        self.additional_log_standard_attrs = attrs

    def _spec(self):
        """What the workers get (plain values)."""
        return {"encoding": self.encoding, "log_level": self.log_level,
                "attrs": self.additional_log_standard_attrs}


class _Context(logging.Filter):
    """Adds the ids Ray's structured logs carry to each record (only while
    a runtime runs: a record never starts one, as an API call would)."""

    def __init__(self):
        super().__init__()
        self._ids = (None, None)          # (backend, (job, worker, node)) of the last record

    def filter(self, record):
        record.timestamp_ns = time.time_ns()
        from nanoray import _api
        backend = _api._backend
        if backend is None or backend.remote:
            return True                    # no runtime here (shut down): the record as it is
        try:
            from nanoray import runtime_context
            ctx = runtime_context.RuntimeContext()
            if self._ids[0] is not backend:
                self._ids = (backend, (ctx.get_job_id(), ctx.get_worker_id(), ctx.get_node_id()))
            record.job_id, record.worker_id, record.node_id = self._ids[1]
            task = ctx.get_task_id()
            if task is not None:
                record.task_id = task
                record.task_name = ctx.get_task_name()
                record.task_func_name = ctx.get_task_function_name()
            actor = ctx.get_actor_id()
            if actor is not None:
                record.actor_id = actor
        except Exception:
            pass
        return True


class _LogStream:
    """Where a process's records go: its real stderr, under the prefixing of
    printed lines (records carry their own ids); in a worker whose tqdm_ray
    bars the driver draws, through the same route as its printed lines, so
    that the driver hides the bars first."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        from nanoray import _output
        route = _output.route
        if route is not None and route(True, text):
            return
        self.stream.write(text)

    def flush(self):
        self.stream.flush()


_IDS = ("job_id", "worker_id", "node_id", "actor_id", "task_id", "task_name", "task_func_name")


class _Formatter(logging.Formatter):
    def __init__(self, spec):
        super().__init__("%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s")
        self.json = spec["encoding"] == "JSON"
        self.attrs = list(spec.get("attrs") or ())

    def format(self, record):
        if self.json:
            record.message = record.getMessage()
            out = {"asctime": self.formatTime(record), "levelname": record.levelname,
                   "message": record.message, "filename": record.filename,
                   "lineno": record.lineno, "process": record.process}
            for k in self.attrs + list(_IDS) + ["timestamp_ns"]:
                if hasattr(record, k):
                    out[k] = getattr(record, k)
            if record.exc_info:
                out["exc_text"] = self.formatException(record.exc_info)
            return json.dumps(out, default=str)
        text = super().format(record)
        extra = ["%s=%s" % (k, getattr(record, k)) for k in self.attrs + list(_IDS)
                 if hasattr(record, k)]
        return " ".join([text] + extra + ["timestamp_ns=%d" % record.timestamp_ns])


def configure_logging(spec):
    """The root logger as LoggingConfig asks (spec: LoggingConfig._spec()),
    writing to this process's real stderr (a worker's lines carry their own
    ids, not the "(f pid=...)" prefix of printed output)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_nanoray", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(_LogStream(getattr(sys.stderr, "_stream", sys.stderr)))
    handler._nanoray = True
    handler.addFilter(_Context())
    handler.setFormatter(_Formatter(spec))
    root.addHandler(handler)
    root.setLevel(spec["log_level"])


def as_rays(ray, kwargs):
    """init()'s job_config and logging_config, for the Ray backend: as
    Ray's types (nanoray's own are given where Ray is not installed)."""
    jc = kwargs.get("job_config")
    if jc is not None and not isinstance(jc, ray.job_config.JobConfig):
        kwargs["job_config"] = ray.job_config.JobConfig(
            jvm_options=jc.jvm_options, code_search_path=jc.code_search_path,
            runtime_env=jc.runtime_env, metadata=jc.metadata, ray_namespace=jc.ray_namespace,
            default_actor_lifetime=jc.default_actor_lifetime)
    lc = kwargs.get("logging_config")
    if lc is not None and not isinstance(lc, ray.LoggingConfig):
        kwargs["logging_config"] = ray.LoggingConfig(
            encoding=lc.encoding, log_level=lc.log_level,
            additional_log_standard_attrs=lc.additional_log_standard_attrs)
