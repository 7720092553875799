"""The examples in the docstrings run, as a reader would run them.

Every public module of the package has at least one example (in its own docstring or
in those of its classes and functions), or is listed below with the reason it has
none. Each module's examples run in fresh globals, not the module's own: an example
imports what it uses, so it works when pasted into a REPL. Each module with examples
has a page in the API reference (docs/api, built by ``make docs``).
"""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

import zerohop

PACKAGE = Path(zerohop.__file__).parent
API_PAGES = Path(__file__).resolve().parent.parent / "docs" / "api"

#: Public modules that carry no example, and why.
WITHOUT_EXAMPLES = {
    "zerohop.runner": "a node process's entry point (python -m zerohop.runner)",
    "zerohop.zygote": "the node processes' factory (python -m zerohop.zygote)",
    "zerohop.nodes.audio": "a helper of the speech nodes",
    "zerohop.nodes.packaged": "a helper of the speech nodes",
}
#: Modules whose examples run a speech engine of the speech extra.
SPEECH = {"zerohop.nodes.tts"}

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def public_modules() -> list[str]:
    """Every module of the package but the private ones (``_native``, ``_proto``)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            names.append(".".join(parts))
    return names


DOCUMENTED = [name for name in public_modules() if name not in WITHOUT_EXAMPLES]


def test_every_module_without_examples_exists() -> None:
    assert set(WITHOUT_EXAMPLES) <= set(public_modules())


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.speech) if n in SPEECH else n for n in DOCUMENTED],
)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module, globs={"__name__": name})
    examples = sum(len(test.examples) for test in tests)
    assert examples, f"{name} has no docstring example (or give a reason in WITHOUT_EXAMPLES)"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_every_module_with_examples_has_an_api_page() -> None:
    shown = {
        name
        for page in API_PAGES.glob("*.md")
        for name in re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.M)
    }
    assert shown == set(DOCUMENTED)
