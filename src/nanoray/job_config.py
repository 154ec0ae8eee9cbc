"""JobConfig and LoggingConfig: init(job_config=, logging_config=) as in Ray.
A job_config's runtime_env and namespace are used (init()'s own arguments
win); the rest is accepted for Ray code to run unchanged."""

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
    """init(logging_config=): the log format and level of Ray's own logs.
    nanoray's messages are few and plain, so it is accepted and changes nothing."""

    def __init__(self, encoding="TEXT", log_level="INFO", additional_log_standard_attrs=None):
        if encoding not in ("TEXT", "JSON"):
            raise ValueError("encoding must be 'TEXT' or 'JSON', got %r" % (encoding,))
        self.encoding = encoding
        self.log_level = log_level
        self.additional_log_standard_attrs = list(additional_log_standard_attrs or [])


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
