"""A node process's thread budget and CPU affinity, applied by the runner before the
node's imports (node side: loaded in node processes only).

Two heavy nodes on a small machine each start a thread per core in every library they
load (OpenMP, MKL, OpenBLAS, onnxruntime, CTranslate2), and then fight over the same
cores. A node's budget (``capabilities.cpu.cores``, or runtime.toml ``[process]
threads_per_node``) goes into the thread-count variables those libraries read as they
load, and into numpy's OpenBLAS, which the zygote loaded before the budget was known;
``NodeContext.threads`` gives it to nodes that size their own pools. With ``[process]
pin_cpus``, each such node also runs on CPUs of its own.

Examples
--------
What a node process with a budget of one core was given:

>>> import zerohop.testing  # Environment: reports what its process was given
>>> from zerohop import Pipeline, Text
>>> pipe = Pipeline().node("env", "Environment", capabilities={"cpu": {"cores": 1}})
>>> report = pipe.run([Text("?")])[0].value
>>> report["threads"], report["env"]["OMP_NUM_THREADS"], report["openblas"] in (1, None)
(1, '1', True)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path

__all__ = ["THREAD_VARIABLES", "budget_cpus", "openblas_threads"]

#: What the usual libraries read for their thread counts.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "RAYON_NUM_THREADS",
)

#: The setter of each OpenBLAS build numpy may bundle.
_OPENBLAS_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def budget_cpus(threads: int | None, cpus: list[int] | None) -> None:
    """Sets this process's thread budget and, given ``cpus``, its CPU affinity."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    if not threads:
        return
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    _openblas_threads(threads)


def _openblas_threads(threads: int) -> None:
    """numpy's OpenBLAS, if this process has it loaded already (the zygote imports
    numpy), sized its pool from the environment at load: tell it now."""
    for library in _openblas():
        for name in _OPENBLAS_SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter(ctypes.c_int(threads))
                break


def openblas_threads() -> int | None:
    """The thread count of the OpenBLAS loaded in this process (None: none loaded)."""
    for library in _openblas():
        for name in _OPENBLAS_SETTERS:
            getter = getattr(library, name.replace("set_num", "get_num"), None)
            if getter is not None:
                return int(getter())
    return None


def _openblas() -> list[ctypes.CDLL]:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    found = []
    for path in sorted(
        {line.split()[-1] for line in maps.splitlines() if "openblas" in line.lower()}
    ):
        with contextlib.suppress(OSError):
            found.append(ctypes.CDLL(path))
    return found
