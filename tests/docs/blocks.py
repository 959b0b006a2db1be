"""The fenced blocks of the project's Markdown, and what the doc test does with each.

A fence may be indented (inside a list item); its content is de-indented by
the fence's indentation. HTML comments on the lines right above a fence, which
GitHub does not render, steer the test:

    <!-- doc-test: skip: REASON -->      not run, for the reason given
    <!-- doc-test: background -->        a long-running command (a worker)
    <!-- doc-test: expect: TEXT -->       the output must contain TEXT
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<body>.*?)\s*-->\s*$")
_PATH_COMMENT = re.compile(r"^#\s+(?P<path>[\w.-]+(?:/[\w.-]+)*\.py)\b")

SHELL = frozenset({"sh", "bash", "shell", "console"})
PYTHON = frozenset({"python", "py"})
OUTPUT = frozenset({"", "text"})  # diagrams and program output: never run


@dataclass(frozen=True)
class Block:
    doc: str  # the Markdown file, relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    skip: str | None = None
    background: bool = False
    expect: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def path(self) -> str | None:
        """The file a Python block is, when its first line names it (``# myapp/tasks.py``)."""
        first = self.text.lstrip("\n").split("\n", 1)[0]
        match = _PATH_COMMENT.match(first)
        return match.group("path") if match and ".." not in match.group("path") else None

    @property
    def kind(self) -> str:
        """shell, python, python-file, doctest, toml, conf, output, or unknown."""
        if self.lang in SHELL:
            return "shell"
        if self.lang == "pycon" or (self.lang in PYTHON and self.text.lstrip().startswith(">>>")):
            return "doctest"
        if self.lang in PYTHON:
            return "python-file" if self.path else "python"
        if self.lang in ("toml", "conf"):
            return self.lang
        if self.lang in OUTPUT:
            return "output"
        return "unknown"

    @property
    def runnable(self) -> bool:
        return self.kind not in ("output", "unknown")

    def commands(self) -> str:
        """The shell text to run: a ``console`` block's ``$ `` lines, or the whole block."""
        if self.lang != "console":
            return self.text
        return "\n".join(line[2:] for line in self.text.splitlines() if line.startswith("$ "))


@dataclass
class Document:
    path: str
    blocks: list[Block] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse(text: str, doc: str) -> Document:
    """Every fenced block of ``text``, with the directives right above it."""
    document = Document(doc)
    lines = text.splitlines()
    pending: list[tuple[int, str]] = []  # (line, directive body) waiting for their fence
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _DIRECTIVE.match(line)
        if directive:
            pending.append((index + 1, directive.group("body")))
            index += 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            for number, _ in pending:
                document.problems.append(f"{doc}:{number}: a doc-test comment not above a fence")
            pending = []
            index += 1
            continue
        start, indent, marker = index + 1, len(fence.group("indent")), fence.group("fence")
        info = fence.group("info").split()
        body: list[str] = []
        index += 1
        while index < len(lines):
            closing = _FENCE.match(lines[index])
            if (
                closing
                and closing.group("fence")[0] == marker[0]
                and len(closing.group("fence")) >= len(marker)
                and not closing.group("info")
            ):
                break
            raw = lines[index]
            body.append(raw[min(indent, len(raw) - len(raw.lstrip(" "))) :])
            index += 1
        else:
            document.problems.append(f"{doc}:{start}: a fence that is never closed")
        document.blocks.append(_block(document, start, info, body, pending))
        pending = []
        index += 1
    for number, _ in pending:
        document.problems.append(f"{doc}:{number}: a doc-test comment not above a fence")
    return document


def _block(
    document: Document, line: int, info: list[str], body: list[str], pending: list[tuple[int, str]]
) -> Block:
    skip: str | None = None
    background = False
    expect: list[str] = []
    for number, directive in pending:
        name, _, argument = directive.partition(":")
        name, argument = name.strip(), argument.strip()
        if name == "skip":
            if not argument:
                document.problems.append(f"{document.path}:{number}: a skip needs a reason")
            skip = argument or "no reason given"
        elif name == "background" and not argument:
            background = True
        elif name == "expect" and argument:
            expect.append(argument)
        else:
            document.problems.append(f"{document.path}:{number}: unknown doc-test {directive!r}")
    return Block(
        doc=document.path,
        line=line,
        lang=info[0].lower() if info else "",
        text="\n".join(body) + "\n",
        skip=skip,
        background=background,
        expect=tuple(expect),
    )


def documents() -> list[Document]:
    """README.md and every Markdown file under docs/, in a stable order."""
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [
        parse(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix()) for path in paths
    ]
