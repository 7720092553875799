"""The documentation's code runs: README snippets and the docstring examples."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import zerohop.channel
import zerohop.data

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_pipeline_example_runs(tmp_path: Path) -> None:
    block = next(b for b in python_blocks() if "Pipeline(" in b)
    script = tmp_path / "readme_pipeline.py"
    script.write_text(block)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["HELLO!", "WORLD!"]


def test_readme_commands_are_the_ci_ones() -> None:
    text = README.read_text()
    assert "make test" in text.split("\n\n")[2]
    assert "make test" in (README.parent / ".ci" / "run").read_text()


def test_docstring_examples() -> None:
    for module in (zerohop.data, zerohop.channel):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
