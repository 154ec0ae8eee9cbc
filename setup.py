"""Extension list and cythonize(); metadata lives in pyproject.toml.

NANORAY_DEBUG=1     -O0 -g, C assertions on
NANORAY_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer
"""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

csrc = sorted(glob.glob("csrc/*.c"))
cflags, lflags = ["-O2", "-std=gnu11", "-Wall", "-Wno-unused-function"], []
if os.environ.get("NANORAY_DEBUG"):
    cflags = ["-O0", "-g", "-std=gnu11", "-UNDEBUG"]
if os.environ.get("NANORAY_SANITIZE"):
    cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    lflags += ["-fsanitize=address,undefined"]


def ext(name, pyx, macros=()):
    return Extension(name, [pyx] + csrc, include_dirs=["csrc"], define_macros=list(macros),
                     extra_compile_args=cflags, extra_link_args=lflags)


setup(ext_modules=cythonize(
    [ext("nanoray._core._runtime", "src/nanoray/_core/_runtime.pyx"),
     # The test module's copy of the core has crash points (csrc/nr_undo.h).
     ext("nanoray._core._ctest", "src/nanoray/_core/_ctest.pyx", [("NR_CRASHPOINTS", "1")])],
    compiler_directives={"language_level": 3},
    include_path=["src"],
))
