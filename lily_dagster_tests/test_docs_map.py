"""The README's maps cannot drift from the repository.

- Every path the README's source-tree map names exists.
- Every Python package directly under `lily_dagster/` and `lily_dagster/lib/` is named in
  that map.
- Every relative link in README.md and docs/**/*.md points to an existing file, and its
  anchor, if any, to a heading of that file (GitHub's slug rules).
- Only docs/developing.md links outside the repository (to the development workspace's
  ../shared/, which a clone of the repository alone does not have).
- Every repository path the pages name in code (`lily_dagster/lib/retention.py`,
  `benchmarks/backfill.py`, …) exists, so a moved module cannot leave a stale page behind.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAP_HEADING = "## Source tree"
# Directories whose Python packages must each be named in the map.
MAPPED_PARENTS = ("lily_dagster", "lily_dagster/lib")
# The only page allowed to link outside the repository.
DEVELOPER_PAGE = ROOT / "docs" / "developing.md"

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target) and ![alt](target); the target ends at whitespace or ")".
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# Code spans that name a path of this repository (not of $LILY_HOME, not a placeholder).
_REPO_PATH = re.compile(
    r"^(?:lily_dagster|lily_dagster_tests|benchmarks|tools|deploy|docs)/[\w./-]*$"
)


# --- markdown helpers -----------------------------------------------------------------------


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: markup dropped, lower case, punctuation other
    than `-` and `_` removed, each space a `-` (so "After a kill -9" is after-a-kill--9)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.replace("`", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    kept = "".join(c for c in text if c in "-_ " or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2… for repeats."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug}-{seen[slug]}"
        else:
            seen[slug] = 0
        found.add(slug)
    return frozenset(found)


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link outside code; a link's text may run
    over several lines."""
    text = path.read_text(encoding="utf-8")
    prose = {number: line for number, line in _prose_lines(text)}
    # Fenced lines blanked, so that line numbers stay; code spans dropped (not links).
    kept = "\n".join(
        _INLINE_CODE.sub("", prose.get(number, ""))
        for number in range(1, len(text.splitlines()) + 1)
    )
    return [(kept.count("\n", 0, m.start()) + 1, m.group(1)) for m in _LINK.finditer(kept)]


def _pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def _relative_links() -> list[tuple[Path, int, str]]:
    return [
        (page, number, target)
        for page in _pages()
        for number, target in links(page)
        if not _SCHEME.match(target)  # http:, https:, mailto:
    ]


def _code_paths() -> list[tuple[Path, int, str]]:
    """(page, line, path) of every code span (outside fenced blocks) naming a repository
    path; a pytest node id's `::test` part is dropped."""
    found: list[tuple[Path, int, str]] = []
    for page in _pages():
        for number, line in _prose_lines(page.read_text(encoding="utf-8")):
            for match in _INLINE_CODE.finditer(line):
                span = match.group(0).strip("`").strip().split("::")[0]
                if _REPO_PATH.match(span):
                    found.append((page, number, span))
    return found


def _where(page: Path, number: int) -> str:
    return f"{page.relative_to(ROOT)}:{number}"


# --- the source-tree map --------------------------------------------------------------------


def map_paths() -> list[str]:
    """The paths the README's source-tree map names: the code spans of each table row's
    first cell, as written (directories end with `/`)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    try:
        start = lines.index(MAP_HEADING)
    except ValueError:
        pytest.fail(f"README.md has no {MAP_HEADING!r} section")
    paths: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if not line.startswith("|") or re.match(r"^\|[\s:|-]+\|$", line):
            continue
        first_cell = line.strip("|").split("|")[0]
        paths.extend(re.findall(r"`([^`]+)`", first_cell))
    return paths


def test_the_map_names_paths() -> None:
    paths = map_paths()
    assert len(paths) >= 10, f"the README's source-tree map names too few paths: {paths}"
    assert len(paths) == len(set(paths)), f"a path is named twice: {paths}"


@pytest.mark.parametrize("path", map_paths())
def test_every_path_in_the_map_exists(path: str) -> None:
    where = ROOT / path.rstrip("/")
    assert where.exists(), f"README.md's source-tree map names {path}, which does not exist"
    if path.endswith("/"):
        assert where.is_dir(), f"README.md's source-tree map names {path} as a directory"
    else:
        assert where.is_file(), f"README.md's source-tree map names {path} as a file"


def _packages(parent: str) -> list[str]:
    folder = ROOT / parent
    return sorted(
        f"{parent}/{child.name}/"
        for child in folder.iterdir()
        if child.is_dir() and (child / "__init__.py").is_file()
    )


@pytest.mark.parametrize(
    "package", [p for parent in MAPPED_PARENTS for p in _packages(parent)], ids=str
)
def test_every_package_is_in_the_map(package: str) -> None:
    named = {p.rstrip("/") + "/" for p in map_paths()}
    assert package in named, (
        f"{package} is a Python package missing from README.md's source-tree map"
    )


# --- links ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "number", "target"),
    _relative_links(),
    ids=[f"{_where(p, n)}:{t}" for p, n, t in _relative_links()],
)
def test_every_relative_link_resolves(page: Path, number: int, target: str) -> None:
    path_part, _, anchor = target.partition("#")
    where = (page.parent / path_part).resolve() if path_part else page
    if not where.is_relative_to(ROOT):
        # Outside the repository: the development workspace (see the test below); a clone of
        # the repository alone does not have it, so it is not required to exist here.
        return
    assert where.exists(), f"{_where(page, number)}: link to {target}: no such file"
    if anchor:
        assert where.suffix == ".md", f"{_where(page, number)}: anchor into a non-markdown file"
        assert anchor in anchors(where), (
            f"{_where(page, number)}: link to {target}: {where.relative_to(ROOT)} has no heading "
            f"with the anchor #{anchor} (has: {sorted(anchors(where))})"
        )


def test_only_the_developer_page_links_outside_the_repository() -> None:
    outside = [
        f"{_where(page, number)}: {target}"
        for page, number, target in _relative_links()
        if not (page.parent / target.partition("#")[0]).resolve().is_relative_to(ROOT)
        and page != DEVELOPER_PAGE
    ]
    assert not outside, (
        "links outside the repository (a clone has no ../shared/): only docs/developing.md "
        f"may have them: {outside}"
    )


@pytest.mark.parametrize(
    ("page", "number", "path"),
    _code_paths(),
    ids=[f"{_where(p, n)}:{t}" for p, n, t in _code_paths()],
)
def test_every_repository_path_the_pages_name_exists(page: Path, number: int, path: str) -> None:
    assert (ROOT / path.rstrip("/")).exists(), (
        f"{_where(page, number)}: names {path}, which does not exist in the repository"
    )


def test_the_slug_rules() -> None:
    assert github_slug("State under `$LILY_HOME`") == "state-under-lily_home"
    assert github_slug("After a kill -9") == "after-a-kill--9"
    assert github_slug("The asset graph (Lineage)") == "the-asset-graph-lineage"
    assert github_slug("The event envelope (version 1)") == "the-event-envelope-version-1"
    assert github_slug("Hooks, validation gates, quarantine and replay") == (
        "hooks-validation-gates-quarantine-and-replay"
    )
