"""RuntimeEnv and RuntimeEnvConfig, Ray's typed forms of a runtime_env
dict: what nanoray supports of it is in nanoray/_runtime_env.py (env_vars,
working_dir, py_modules; a key that needs a machine of its own, such as pip
or conda, is refused when the RuntimeEnv is made)."""

from nanoray import _runtime_env

__all__ = ["RuntimeEnv", "RuntimeEnvConfig"]


class RuntimeEnvConfig(dict):
    """runtime_env["config"]: setup_timeout_seconds and eager_install,
    accepted as Ray takes them (nothing is installed here, so they change
    nothing)."""

    def __init__(self, setup_timeout_seconds=600, eager_install=True, log_files=None):
        if not isinstance(setup_timeout_seconds, int) or isinstance(setup_timeout_seconds, bool):
            raise TypeError("setup_timeout_seconds must be an int, got %r"
                            % (type(setup_timeout_seconds).__name__,))
        if setup_timeout_seconds <= 0 and setup_timeout_seconds != -1:
            raise ValueError("setup_timeout_seconds must be > 0 or -1, got %r"
                             % (setup_timeout_seconds,))
        if not isinstance(eager_install, bool):
            raise TypeError("eager_install must be a bool, got %r"
                            % (type(eager_install).__name__,))
        super().__init__(setup_timeout_seconds=setup_timeout_seconds,
                         eager_install=eager_install)
        if log_files is not None:
            self["log_files"] = list(log_files)


class RuntimeEnv(dict):
    """A runtime_env as a dict of the fields given: pass it wherever a
    runtime_env dict goes (init(), .options(), @remote)."""

    def __init__(self, *, py_modules=None, working_dir=None, pip=None, conda=None,
                 container=None, env_vars=None, worker_process_setup_hook=None, nsight=None,
                 config=None, _validate=True, mpi=None, image_uri=None, uv=None, **kwargs):
        super().__init__()
        fields = dict(py_modules=py_modules, working_dir=working_dir, pip=pip, conda=conda,
                      container=container, env_vars=env_vars,
                      worker_process_setup_hook=worker_process_setup_hook, nsight=nsight,
                      config=config, mpi=mpi, image_uri=image_uri, uv=uv, **kwargs)
        self.update({k: v for k, v in fields.items() if v is not None})
        if _validate:
            _runtime_env.validate(dict(self))

    def to_dict(self):
        return dict(self)

    def env_vars(self):
        return dict(self.get("env_vars") or {})

    def working_dir(self):
        return self.get("working_dir", "")

    def py_modules(self):
        return list(self.get("py_modules") or [])

    def has_working_dir(self):
        return bool(self.get("working_dir"))

    def has_py_modules(self):
        return bool(self.get("py_modules"))
