"""The public surface is pinned: a Ray user's imports keep working."""

import subprocess
import sys

import nanoray


def test_public_names():
    assert sorted(nanoray.__all__) == sorted([
        "ActorClass", "ActorHandle", "DynamicObjectRefGenerator", "LoggingConfig", "ObjectRef",
        "ObjectRefGenerator", "RemoteFunction", "actor", "available_resources", "cancel",
        "cloudpickle", "cluster_resources", "exceptions", "experimental", "get", "get_actor",
        "get_gpu_ids", "nodes",
        "get_runtime_context", "init", "is_initialized", "kill", "method", "put", "remote",
        "shutdown", "timeline", "util", "wait", "__version__"])
    for name in nanoray.__all__:
        assert hasattr(nanoray, name)


def test_the_module_paths_ray_programs_import_from():
    from nanoray import dag
    from nanoray._raylet import ObjectRefGenerator
    from nanoray.dag.input_node import InputNode
    from nanoray.dag.output_node import MultiOutputNode
    assert (InputNode, MultiOutputNode) == (dag.InputNode, dag.MultiOutputNode)
    assert ObjectRefGenerator is nanoray.ObjectRefGenerator


def test_exceptions_module_mirrors_ray():
    from nanoray import exceptions as e
    assert issubclass(e.GetTimeoutError, e.RayError) and issubclass(e.GetTimeoutError, TimeoutError)
    assert issubclass(e.RayTaskError, e.RayError)
    assert issubclass(e.ObjectStoreFullError, e.RayError)
    assert issubclass(e.WorkerCrashedError, e.RayError)
    assert e.TaskError is e.RayTaskError
    for lost in (e.ObjectFreedError, e.OwnerDiedError, e.ObjectFetchTimedOutError,
                 e.ReferenceCountingAssertionError, e.ObjectReconstructionFailedError):
        assert issubclass(lost, e.ObjectLostError)
    for actor_error in (e.ActorDiedError, e.ActorUnavailableError):
        assert issubclass(actor_error, e.RayActorError)
    for name in ("TaskCancelledError", "RuntimeEnvSetupError", "PendingCallsLimitExceeded",
                 "OutOfMemoryError", "OutOfDiskError", "NodeDiedError", "RaySystemError",
                 "TaskUnschedulableError", "ActorUnschedulableError", "AsyncioActorExit",
                 "TaskPlacementGroupRemoved", "ActorPlacementGroupRemoved"):
        assert issubclass(getattr(e, name), e.RayError), name
    assert set(e.__all__) <= set(dir(e))
    err = e.TaskCancelledError("00ff")
    assert err.task_id == "00ff" and "00ff" in str(err)


def test_importing_starts_nothing():
    code = "import nanoray, os; print(len(os.listdir('/proc/self/task')), nanoray.is_initialized())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == "False"


def test_microbenchmark_cli_reports_nanoray_next_to_its_peers():
    out = subprocess.run(
        [sys.executable, "-m", "nanoray", "microbenchmark", "--quick", "--num-cpus", "2"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    for row in ("init until first task", "pipelined no-op tasks", "task round trip",
                "put 256 MiB", "get 256 MiB"):
        assert row in out.stdout
    assert "Pool" in out.stdout and "ProcessPoolExecutor" in out.stdout
    assert "nanoray vs Pool" in out.stdout


def test_cli_rejects_unknown_commands():
    out = subprocess.run([sys.executable, "-m", "nanoray", "bogus"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown command" in out.stderr
