"""The wheel a user installs works on its own, outside the source tree."""

import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    import nanoray as ray
    assert nanoray_dir in ray.__file__, ray.__file__
    @ray.remote
    def double(a):
        return a * 2
    got = ray.get(double.remote(ray.put(np.arange(4))))
    assert got.tolist() == [0, 2, 4, 6] and not ray.get(ray.put(np.ones(1 << 16))).flags.owndata
    ray.shutdown()
    print("wheel ok")
""")


def test_wheel_installs_into_a_clean_venv_and_runs_tasks(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, timeout=900)
    (wheel,) = wheels.glob("nanoray-*.whl")
    import zipfile
    with zipfile.ZipFile(wheel) as z:
        sizes = {i.filename: i.file_size for i in z.infolist()}
    # Lean: no Cython sources, no test-only module, and stripped extensions
    # (5.3 MB unstripped).
    assert not [n for n in sizes if n.endswith((".pyx", ".pxd"))], sorted(sizes)
    assert not [n for n in sizes if "_ctest" in n], sorted(sizes)
    runtime = [s for n, s in sizes.items() if "_runtime." in n and n.endswith(".so")]
    assert runtime and runtime[0] < 2_000_000, runtime
    venv = tmp_path / "venv"
    # numpy and cloudpickle come from the test environment; nanoray only from the wheel.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # --ignore-installed: a nanoray in the system site-packages must not count.
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--ignore-installed", str(wheel)], check=True, timeout=300, env=env)
    out = subprocess.run([py, "-c", "nanoray_dir = %r\n%s" % (str(venv), SCRIPT)],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "wheel ok" in out.stdout
    cli = subprocess.run([str(venv / "bin" / "nanoray"), "--help"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert cli.returncode == 0 and "microbenchmark" in cli.stdout
