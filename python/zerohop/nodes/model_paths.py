"""Which files a node's params may point it at.

A manifest can come from a gRPC client, so a param meant as a model's location must not
become a way to make a node process open any file the server can read. A path param
(``model_path``, ``config_path``, ``tokenizer_path``) is accepted only inside the
directories of the packaged models or a directory listed in runtime.toml's
``[nodes] model_dirs`` — after symlinks and ``..`` are resolved. A manifest cannot change
that list. A model *name* (Whisper's ``model``) is a name, never a path.

The check runs where params are validated with the runtime configuration in hand
(:class:`~zerohop.pipeline.Pipeline`, hence manifests and ``zerohop serve``), before any
process is spawned; the error names the field. A node built directly in Python code, with
no configuration in its validation context, is trusted like the code that builds it.

Examples
--------
>>> from zerohop import Pipeline
>>> Pipeline("vad").node("vad", "SileroVADNode", model_path="/etc/passwd")
Traceback (most recent call last):
    ...
zerohop.errors.ManifestError: nodes[0].params.model_path: Value error, '/etc/passwd' is
outside the directories model files may be loaded from ...
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationInfo

from ..node import MODEL_DIRS_CONTEXT
from .packaged import KNOWN_FILES, installed_dir

__all__ = ["ModelName", "ModelPath", "allowed_roots"]

# A Whisper size ("tiny.en") or a hub id ("org/name"); no leading dot, so never "..".
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def allowed_roots(model_dirs: tuple[str, ...] | list[str]) -> list[Path]:
    """The configured directories and those of the installed packages the built-in
    nodes load models from, symlinks resolved."""
    packaged = (installed_dir(module) for module in sorted({m for m, _ in KNOWN_FILES}))
    return [Path(os.path.realpath(d)) for d in (*model_dirs, *filter(None, packaged))]


def _check_path(value: str, info: ValidationInfo) -> str:
    context: Any = info.context
    if not isinstance(context, dict) or MODEL_DIRS_CONTEXT not in context:
        return value  # built by trusted code, not from a manifest
    dirs = tuple(context[MODEL_DIRS_CONTEXT])
    resolved = Path(os.path.realpath(value))
    if any(resolved.is_relative_to(root) for root in allowed_roots(dirs)):
        return value
    listed = ", ".join(dirs) if dirs else "none are set"
    raise ValueError(
        f"{value!r} is outside the directories model files may be loaded from (the "
        f"packaged models' and runtime.toml [nodes] model_dirs: {listed})"
    )


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a model name (a size such as 'tiny.en' or a hub id "
            "'org/name'); a model directory goes in model_path"
        )
    return value


#: A model file or directory named by params; see the module docs.
ModelPath = Annotated[str, AfterValidator(_check_path)]
#: A model name resolved in the local model cache, never as a path.
ModelName = Annotated[str, AfterValidator(_check_name)]
