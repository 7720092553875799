"""The documentation's code runs: the README's snippets and commands (the docstring
examples: test_doctests.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_pipeline_example_runs(tmp_path: Path) -> None:
    block = next(b for b in python_blocks() if "Pipeline(" in b)
    script = tmp_path / "readme_pipeline.py"
    script.write_text(block)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["HELLO!", "WORLD!"]


def readme_commands(readme: str) -> list[str]:
    """The commands of the README's first code block, their comments dropped."""
    found = re.search(r"```bash\n(.*?)```", readme, flags=re.S)
    assert found, "the README starts with no bash block"
    lines = (re.sub(r"\s+#.*", "", line).strip() for line in found[1].splitlines())
    return [line for line in lines if line]


def make_dry_run(makefile: Path, target: str) -> list[str]:
    """The commands ``make TARGET`` would run, prerequisites first, none run."""
    out = subprocess.run(
        [
            "make",
            "--dry-run",
            "--no-print-directory",
            "-f",
            str(makefile),
            target,
            "PYTHON=python3",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def disagreements(readme: str, makefile: Path, ci: str) -> list[str]:
    """What keeps the README's two commands from working as written on a fresh machine,
    or CI from proving that they do: the first installs, the second tests in the
    environment the first made (so it installs its own test tools), and ``.ci/run`` runs
    both verbatim with nothing installed from PyPI in between."""
    problems = []
    commands = readme_commands(readme)
    if len(commands) != 2 or "pip install" not in commands[0]:
        return [f"the README's first block is not [install, test]: {commands}"]
    install, test = commands
    if not test.startswith("make "):
        return [f"the README's test command is not a make target: {test!r}"]
    ci_lines = [line.strip() for line in ci.splitlines()]
    if install not in ci_lines or test not in ci_lines:
        problems.append(".ci/run does not run the README's two commands as written")
    else:
        before_tests = ci_lines[ci_lines.index(install) + 1 : ci_lines.index(test)]
        problems += [
            f".ci/run installs between the README's commands: {line!r}"
            for line in before_tests
            if re.search(r"\bpip\b|make (install|develop|speech-models)|maturin", line)
        ]
        problems += [
            f".ci/run installs a Python package outside the README's first command: {line!r}"
            for line in ci_lines[: ci_lines.index(install)]
            if re.search(r"\bpip\b|maturin", line) and not line.startswith("#")
        ]
    runs = make_dry_run(makefile, test.split()[1])
    pytest_at = next((i for i, line in enumerate(runs) if " -m pytest" in line), None)
    if pytest_at is None:
        problems.append(f"{test!r} runs no pytest")
    if not any("cargo test" in line for line in runs):
        problems.append(f"{test!r} runs no cargo test")
    installs_tests = [
        i
        for i, line in enumerate(runs)
        if '"pip", "install"' in line and line.split()[-1] == "test"
    ]
    if not installs_tests or (pytest_at is not None and installs_tests[0] > pytest_at):
        problems.append(f"{test!r} does not install the test extra before pytest")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    if not any(req.startswith("pytest") for req in extras["optional-dependencies"]["test"]):
        problems.append("the test extra has no pytest")
    # A failure (pytest's exit 5 for no test among them) must fail the command.
    problems += [f"{test!r} ignores a failure: {line!r}" for line in runs if "||" in line]
    problems += [
        f"the Makefile ignores a failure: {line!r}"
        for line in makefile.read_text().splitlines()
        if line.startswith(("\t-", "\t@-"))
    ]
    return problems


def test_readme_commands_makefile_and_ci_agree() -> None:
    """The README's install and test commands, the Makefile and .ci/run agree."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert disagreements(README.read_text(), ROOT / "Makefile", ci) == []


def test_make_help_and_the_readme_name_the_test_targets() -> None:
    out = subprocess.run(
        ["make", "--no-print-directory", "help"], capture_output=True, text=True, cwd=ROOT
    )
    listed = {line.split("\t")[0] for line in out.stdout.splitlines()}
    development = README.read_text().split("\n## Development\n")[1].split("\n#")[0]
    for target in ("test", "test-fast", "lint", "docs"):
        assert target in listed, out.stdout
        assert f"`make {target}`" in development, target


def test_the_agreement_check_catches_what_it_must(tmp_path: Path) -> None:
    """The check above fails on the setup it replaced: tests that need ``make install``
    first, and CI that ran it before ``make test``."""
    readme, ci = README.read_text(), (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    old_makefile = tmp_path / "Makefile"
    old_makefile.write_text(makefile.replace("test: test-tools", "test:"))
    assert disagreements(readme, old_makefile, ci) == [
        "'make test' does not install the test extra before pytest"
    ]
    install = readme_commands(readme)[0]
    old_ci = ci.replace(install, f"{install}\nmake install")
    assert disagreements(readme, ROOT / "Makefile", old_ci) == [
        ".ci/run installs between the README's commands: 'make install'"
    ]
    swallowed = tmp_path / "Swallowed"
    swallowed.write_text(makefile.replace("-m pytest -q\n", "-m pytest -q || true\n", 1))
    assert disagreements(readme, swallowed, ci) == [
        "'make test' ignores a failure: 'python3 -m pytest -q || true'"
    ]
    other = readme.replace(install, install.replace("reply.wav", "answer.wav"), 1)
    assert disagreements(other, ROOT / "Makefile", ci) == [
        ".ci/run does not run the README's two commands as written"
    ]
