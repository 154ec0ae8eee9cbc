"""Extension list and cythonize(); metadata lives in pyproject.toml.

NANORAY_DEBUG=1     -O0 -g, C assertions on
NANORAY_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer
NANORAY_PROFILE=1   timestamps at the region lock and futexes (csrc/nr_prof.h), symbols
                    kept: for benchmarks/bench_breakdown.py, which builds it apart
"""
import glob
import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

csrc = sorted(glob.glob("csrc/*.c"))
headers = sorted(glob.glob("csrc/*.h"))
cflags, lflags = ["-O2", "-std=gnu11", "-Wall", "-Wno-unused-function"], []
if os.environ.get("NANORAY_DEBUG"):
    cflags = ["-O0", "-g", "-std=gnu11", "-UNDEBUG"]
if os.environ.get("NANORAY_SANITIZE"):
    cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    lflags += ["-fsanitize=address,undefined"]
if os.environ.get("NANORAY_PROFILE"):
    cflags += ["-g", "-DNR_PROFILE=1"]
    lflags += ["-Wl,--wrap=pthread_mutex_unlock"]     # times the lock's release (nr_prof.c)
if not (os.environ.get("NANORAY_DEBUG") or os.environ.get("NANORAY_SANITIZE")
        or os.environ.get("NANORAY_PROFILE")):
    lflags += ["-s"]          # stripped: the wheel ships no symbols (5.3 MB -> about 1 MB)


def crashpoint_sources():
    """The test module's copy of the core has crash points (csrc/nr_undo.h).
    Each C file is compiled through a wrapper of its own, so its object file
    never stands in for the runtime's (both extensions share build_temp)."""
    out = []
    os.makedirs("build/crashpoints", exist_ok=True)
    for c in csrc:
        wrapper = os.path.join("build/crashpoints", os.path.basename(c))
        text = '#ifndef NR_CRASHPOINTS\n#define NR_CRASHPOINTS 1\n#endif\n#include "%s"\n' % (
            os.path.abspath(c))
        if not os.path.exists(wrapper) or open(wrapper).read() != text:
            with open(wrapper, "w") as f:
                f.write(text)
        out.append(wrapper)
    return out


def ext(name, pyx, c_sources, macros=()):
    # depends: a changed header (or, for the wrappers, C file) rebuilds every
    # object: setuptools does not read #includes.
    return Extension(name, [pyx] + c_sources, include_dirs=["csrc"], depends=headers + csrc,
                     define_macros=list(macros), extra_compile_args=cflags,
                     extra_link_args=lflags)


# The test-only module (the core again, with crash points) is built in place
# for the tests (build_ext --inplace), never into a wheel; NANORAY_CTEST_ONLY=1
# builds just that module (.ci/run adds it beside an installed wheel).
inplace = "--inplace" in sys.argv or "-i" in sys.argv
exts = []
if not os.environ.get("NANORAY_CTEST_ONLY"):
    exts.append(ext("nanoray._core._runtime", "src/nanoray/_core/_runtime.pyx", csrc))
if inplace or os.environ.get("NANORAY_CTEST_ONLY"):
    exts.append(ext("nanoray._core._ctest", "src/nanoray/_core/_ctest.pyx", crashpoint_sources(),
                    [("NR_CRASHPOINTS", "1")]))

class BuildPy(build_py):
    """Leaves out a test module built in place in this checkout (setuptools
    copies the package directory's shared objects along with its modules)."""

    def run(self):
        super().run()
        core = os.path.join(self.build_lib, "nanoray", "_core")
        for name in os.listdir(core) if os.path.isdir(core) else ():
            if name.startswith("_ctest") and not os.environ.get("NANORAY_CTEST_ONLY"):
                os.remove(os.path.join(core, name))


setup(cmdclass={"build_py": BuildPy}, ext_modules=cythonize(
    exts,
    compiler_directives={"language_level": 3},
    include_path=["src"],
))
