"""A griffe extension: the reST of zerohop's docstrings as the Markdown mkdocstrings renders.

The docstrings are numpy style, written for readers of the source and for ``help()``,
with the reST inline markup Python docstrings use. Before mkdocstrings parses them, this
rewrites the three constructs Markdown does not share:

- a cross-reference role (``:class:`~zerohop.session.Session```, ``:meth:`close```...)
  becomes a link, its target resolved in the docstring's scope (griffe's rules: the
  object's members, then its parents', imports included): a name that resolves to
  nothing, or to an object the reference does not show, fails the strict build; a
  target in a private module (``zerohop._native``) stays plain code;
- a literal block introduced by ``::`` loses the second colon (the indented block after
  it is a Markdown code block already);
- doctest lines outside an ``Examples`` section (which griffe handles itself) are fenced
  as ``pycon`` code, so Markdown does not read ``>>>`` as quotes.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|data|exc|obj):`(~?)([\w.]+)(\(\))?`")
SECTION_RULE = re.compile(r"^-{3,}$")

logger = griffe.get_logger(__name__)


class RstToMarkdown(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Once the whole package is loaded (every name can be resolved)."""
        _rewrite(pkg)


def _rewrite(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        text = _fence_doctests(obj.docstring.value)
        text = re.sub(r"(\S)::$", r"\1:", text, flags=re.M)
        text = re.sub(r"^\s*::$\n", "", text, flags=re.M)
        obj.docstring.value = ROLE.sub(lambda m: _link(obj, m), text)
    for member in obj.members.values():
        if not member.is_alias:
            _rewrite(member)


def _link(obj: griffe.Object, match: re.Match[str]) -> str:
    short, name, call = match.groups()
    target = _resolve(obj, name)
    title = (name.rsplit(".", 1)[-1] if short else name) + (call or "")
    if target is None:
        logger.warning("%s: cannot resolve the reference %r", obj.path, name)
        return f"`{title}`"
    if any(part.startswith("_") for part in target.split(".")):
        return f"`{title}`"
    return f"[`{title}`][{target}]"


def _resolve(obj: griffe.Object, name: str) -> str | None:
    """The full path ``name`` stands for in ``obj``'s docstring."""
    head, _, rest = name.partition(".")
    try:
        found = obj.resolve(head)
    except griffe.NameResolutionError:
        if head != obj.module.package.name:
            return None
        found = head
    return f"{found}.{rest}" if rest else found


def _fence_doctests(text: str) -> str:
    """``text`` with each run of doctest lines outside an Examples section fenced."""
    lines = text.splitlines()
    out: list[str] = []
    in_examples = fenced = False
    for i, line in enumerate(lines):
        header = i + 1 < len(lines) and SECTION_RULE.match(lines[i + 1]) and line.strip()
        if header:
            in_examples = line.strip() == "Examples"
        if fenced and not line.strip():
            out.append("```")
            fenced = False
        if not in_examples and not fenced and line.startswith(">>>"):
            out.append("```pycon")
            fenced = True
        out.append(line)
    if fenced:
        out.append("```")
    return "\n".join(out)
