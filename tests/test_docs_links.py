"""What the documentation points at is in the repository: relative links in the Markdown files,
and every Markdown file a source comment or a document names (docs/WORKLOAD.md, not a file on
some developer's machine)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = (
    "agent",
    "bench",
    "common",
    "controller",
    "simulator",
    "protos",
    "tests",
    "docs",
    "deploy",
    "examples",
)
SOURCE_SUFFIXES = {".py", ".proto", ".md", ".toml", ".service"}
SKIP_PARTS = {".venv", ".git", "__pycache__", "node_modules", ".mypy_cache", ".ruff_cache"}

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
"""A Markdown inline link or image: ``[text](target "title")``; group 1 is the target."""
MD_NAME = re.compile(r"(?<![\w./:-])((?:/|\.{1,2}/)?(?:[\w.-]+/)*[\w.-]+\.md)\b")
"""A Markdown file named in prose or a comment (``WORKLOAD.md``, ``docs/BENCHMARKS.md``); not
part of a URL (nothing word-like, ``/`` or ``:`` just before it)."""


def markdown_files() -> list[Path]:
    return sorted(
        [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "deploy").rglob("*.md")]
    )


def source_files() -> Iterator[Path]:
    yield ROOT / "README.md"
    yield ROOT / "Makefile"
    for top in SOURCE_DIRS:
        for path in (ROOT / top).rglob("*"):
            if (
                path.suffix in SOURCE_SUFFIXES
                and path.is_file()
                and not SKIP_PARTS.intersection(path.relative_to(ROOT).parts)
                and not path.name.endswith("_pb2.py")
                and path != Path(__file__).resolve()  # its own examples of broken names
            ):
                yield path


def relative_links(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, target) of each link that is neither a URL nor an anchor in the page."""
    in_code = False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            yield n, target


def test_the_link_checker_tells_a_missing_target_from_a_present_one(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "[a](https://x.org/y.md) [b](#top) [c](other.md#part) ![d](img/p.png)\n"
        "```\n[e](inside-code.md)\n```\n"
    )
    assert list(relative_links(page)) == [(1, "other.md#part"), (1, "img/p.png")]
    names = MD_NAME.findall("see docs/WORKLOAD.md, https://github.com/a/b/README.md and X.md")
    assert names == ["docs/WORKLOAD.md", "X.md"]


def test_every_relative_link_in_the_docs_resolves_to_a_file_in_the_repository() -> None:
    broken = []
    for page in markdown_files():
        for n, target in relative_links(page):
            resolved = (page.parent / target.split("#", 1)[0]).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}:{n}: {target}")
    assert not broken, "links to files that are not in the repository:\n" + "\n".join(broken)


def test_every_markdown_file_the_sources_and_docs_name_is_in_the_repository() -> None:
    present = [*ROOT.glob("*.md"), *(p for p in source_files() if p.suffix == ".md")]
    names = {p.name for p in present}
    missing = []
    for path in source_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            for name in MD_NAME.findall(line):
                if name.startswith("/"):
                    ok = False  # an absolute path: a file outside the repository
                elif "/" in name:
                    ok = (ROOT / name).exists() or (path.parent / name).resolve().exists()
                else:
                    ok = name in names
                if not ok:
                    missing.append(f"{path.relative_to(ROOT)}:{n}: {name}")
    assert not missing, "Markdown files named but not in the repository:\n" + "\n".join(missing)
