"""What a node may use: the memory limit a node's ``capabilities`` ask for, within the
operator's ceilings.

A node's ``capabilities`` (remotemedia ``manifest.v1``; ``Pipeline.node(...,
capabilities={...})`` in Python) may give ``memory_gb``: the most memory its process may
hold. runtime.toml ``[process] max_node_memory_bytes`` is the operator's ceiling — a node
may ask for less, never more (asking for more is a warning naming the field, and the
ceiling holds) — and, when the node asks nothing, its limit. ``max_session_memory_bytes``
caps all of a session's node processes together. The executor holds the limits with the
kernel's accounting where it can (a cgroup per node), else by watching resident memory;
a node past its limit is stopped and the session fails with
:class:`~zerohop.errors.ResourceLimitError` naming the node, the limit and the peak.

``cpu.cores`` is the node's thread budget (at most the CPUs this machine gives us; see
:mod:`zerohop.threads`); ``[process] threads_per_node`` is the budget of nodes that give
none, and ``[process] pin_cpus`` gives each budgeted node CPUs of its own. ``cpu.arch``
must be this machine's. ``gpu`` hands the node one of runtime.toml's ``[nodes] gpus``
through ``CUDA_VISIBLE_DEVICES`` (``HIP_VISIBLE_DEVICES`` for ``type: "rocm"``): the one
``gpu.device`` names, else the next in turn; ``required: true`` on a host that hands out
none is an error naming the field, before anything starts. Other keys
(``min_memory_gb``: there is no GPU here to check it against) get a warning naming them,
or an error from the builder.

Examples
--------
>>> from zerohop import Pipeline
>>> pipe = Pipeline().node("e", "Echo", capabilities={"memory_gb": 0.5})
>>> pipe.graph()["nodes"][0]["memory_limit"]
500000000
"""

from __future__ import annotations

import itertools
import os
import platform
from typing import Any

from .config import RuntimeConfig
from .errors import ManifestError, ManifestWarning

__all__ = [
    "gpu_environment",
    "mechanism",
    "memory_limit",
    "pin",
    "thread_budget",
    "unimplemented",
    "usable_cpus",
]

#: ``capabilities`` keys zerohop acts on.
IMPLEMENTED = ("memory_gb", "cpu", "gpu")
#: ``capabilities.cpu`` / ``.gpu`` keys zerohop acts on.
CPU_IMPLEMENTED = ("cores", "arch")
GPU_IMPLEMENTED = ("type", "required", "device")
#: The variable that picks a process's GPUs, by the runtime ``gpu.type`` names.
GPU_VARIABLES = {
    "": "CUDA_VISIBLE_DEVICES",
    "cuda": "CUDA_VISIBLE_DEVICES",
    "nvidia": "CUDA_VISIBLE_DEVICES",
    "rocm": "HIP_VISIBLE_DEVICES",
    "amd": "HIP_VISIBLE_DEVICES",
    "hip": "HIP_VISIBLE_DEVICES",
}


def mechanism() -> str:
    """What holds memory limits here: ``"cgroup v2"``, ``"cgroup v1 memory controller"``
    or ``"RSS watch"`` (see the README's "Memory limits")."""
    from . import _native

    return _native.memory_mechanism()


def unimplemented(
    capabilities: dict[str, Any] | None, path: str, node_id: str
) -> list[ManifestWarning]:
    """A warning for each ``capabilities`` key zerohop does not act on yet."""
    keys = [key for key in capabilities or {} if key not in IMPLEMENTED]
    for name, known in (("cpu", CPU_IMPLEMENTED), ("gpu", GPU_IMPLEMENTED)):
        inner = (capabilities or {}).get(name)
        if isinstance(inner, dict):
            keys += [f"{name}.{key}" for key in inner if key not in known]
    return [
        ManifestWarning(
            f"{path}.capabilities.{key}",
            f"not implemented by zerohop; ignored (node '{node_id}')",
            node_id,
        )
        for key in keys
    ]


def usable_cpus() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))


def thread_budget(
    capabilities: dict[str, Any] | None, *, path: str, node_id: str, config: RuntimeConfig
) -> int | None:
    """The node's thread budget: ``capabilities.cpu.cores`` (at most the CPUs this
    machine gives us), else ``[process] threads_per_node``; None: none. A ``cpu.arch``
    this machine is not is an error naming it."""
    cpu = (capabilities or {}).get("cpu")
    if cpu is None:
        return config.process.threads_per_node or None
    if not isinstance(cpu, dict):
        raise _invalid(f"{path}.capabilities.cpu", "must be an object {cores, arch}", node_id)
    arch = cpu.get("arch")
    if arch and str(arch).lower() not in _ARCH_NAMES.get(platform.machine(), {platform.machine()}):
        raise _invalid(
            f"{path}.capabilities.cpu.arch",
            f"'{arch}' asked for, but this machine is {platform.machine()}",
            node_id,
        )
    cores = cpu.get("cores")
    if cores is None or cores == 0:
        return config.process.threads_per_node or None
    have = len(usable_cpus())
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 0:
        raise _invalid(f"{path}.capabilities.cpu.cores", "must be a whole number ≥ 1", node_id)
    if cores > have:
        raise _invalid(
            f"{path}.capabilities.cpu.cores",
            f"{cores} cores asked for, but this machine gives zerohop {have}",
            node_id,
        )
    return int(cores)


#: ``cpu.arch`` spellings of each ``platform.machine()``.
_ARCH_NAMES = {
    "x86_64": {"x86_64", "amd64", "x64"},
    "aarch64": {"aarch64", "arm64"},
}


def _invalid(path: str, message: str, node_id: str) -> ManifestError:
    return ManifestError(f"{path}: {message} (node '{node_id}')", path=path, node_id=node_id)


_next_gpu = itertools.count()


def gpu_environment(
    capabilities: dict[str, Any] | None,
    *,
    path: str,
    node_id: str,
    config: RuntimeConfig,
    warnings: list[ManifestWarning],
) -> dict[str, str]:
    """The variables that hand the node its GPU: ``capabilities.gpu.device`` if it names
    one, else the next of ``[nodes] gpus`` (round robin over this process's sessions).
    A GPU ``required`` on a host that hands out none is an error naming the field; one
    merely wanted is a warning, and the node runs without."""
    gpu = (capabilities or {}).get("gpu")
    if gpu is None:
        return {}
    field = f"{path}.capabilities.gpu"
    if not isinstance(gpu, dict):
        raise _invalid(field, "must be an object {type, required, device, ...}", node_id)
    kind = str(gpu.get("type") or "").lower()
    if kind not in GPU_VARIABLES:
        raise _invalid(
            f"{field}.type",
            f"unknown GPU runtime '{gpu.get('type')}' (known: cuda, rocm)",
            node_id,
        )
    devices = config.nodes.gpus
    if not devices:
        if gpu.get("required"):
            raise _invalid(
                field,
                "a GPU is required, but this host hands out none (runtime.toml [nodes] gpus)",
                node_id,
            )
        warnings.append(
            ManifestWarning(
                field, f"this host hands out no GPU; node '{node_id}' runs without", node_id
            )
        )
        return {GPU_VARIABLES[kind]: ""}
    device = gpu.get("device")
    if device is not None:
        if str(device) not in devices:
            raise _invalid(
                f"{field}.device",
                f"'{device}' is not a GPU this host hands out ({', '.join(devices)})",
                node_id,
            )
        chosen = str(device)
    else:
        chosen = devices[next(_next_gpu) % len(devices)]
    return {GPU_VARIABLES[kind]: chosen}


def pin(budgets: list[int | None]) -> list[list[int] | None]:
    """CPUs of their own for each node with a budget, in node order (wrapping)."""
    cpus = usable_cpus()
    cursor = 0
    pinned: list[list[int] | None] = []
    for budget in budgets:
        if not budget:
            pinned.append(None)
            continue
        pinned.append(sorted({cpus[(cursor + k) % len(cpus)] for k in range(budget)}))
        cursor += budget
    return pinned


def memory_limit(
    capabilities: dict[str, Any] | None,
    *,
    path: str,
    node_id: str,
    config: RuntimeConfig,
    warnings: list[ManifestWarning],
) -> int | None:
    """The node's memory limit in bytes (None: none): ``capabilities.memory_gb`` within
    ``[process] max_node_memory_bytes``; asking past the ceiling adds a warning."""
    field = f"{path}.capabilities.memory_gb"
    asked = (capabilities or {}).get("memory_gb")
    ceiling = config.process.max_node_memory_bytes or None
    if asked is None:
        return ceiling
    if isinstance(asked, bool) or not isinstance(asked, int | float) or not asked > 0:
        raise ManifestError(
            f"{field}: must be a positive number of gigabytes, got {asked!r} (node '{node_id}')",
            path=field,
            node_id=node_id,
        )
    wanted = int(asked * 1e9)
    if ceiling is not None and wanted > ceiling:
        warnings.append(
            ManifestWarning(
                field,
                f"{asked} GB is above the operator's ceiling ([process] max_node_memory_bytes "
                f"= {ceiling}); node '{node_id}' gets {ceiling} bytes",
                node_id,
            )
        )
        return ceiling
    return wanted
