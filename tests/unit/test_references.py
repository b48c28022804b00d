"""The repository points only at files it contains: every path and doc link in the code, tests and docs
names a file of this checkout (and a heading of it, for `#anchor`s), and no comment names a tracker item."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEARCHED = ("app", "tests", "bench", "docs", "docker", "topics", ".ci")
TOP_FILES = ("README.md", "Makefile", "pyproject.toml")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".toml", ".txt", ".cfg", ""}
#: Placeholders in prose ("run one with ... tests/integration/test_x.py"), not references.
PLACEHOLDERS = {"tests/integration/test_x.py"}

#: A repository path such as `docs/reference.md#segment-limits` or `app/records.py`.
PATH = re.compile(
    r"(?<![\w/.-])((?:docs|bench|tests|app|topics|docker)/[\w./-]*\w\.(?:md|py|yaml|yml|json|toml))(#[\w-]+)?"
)
#: A relative Markdown link: `[text](reference.md#kochava-postbacks)`.
LINK = re.compile(r"\]\(([\w./-]+\.md)(#[\w-]+)?\)")
#: Notes that live outside the repository, and tracker numbers ("issue 12").
OUTSIDE = re.compile(r"stream-design-notes|shared/reference|(?<![\w/.-])(?:segment|kochava|privacy)\.md")
TRACKER = re.compile(r"\bissue \d+", re.IGNORECASE)


def _files() -> list[Path]:
    found = [ROOT / name for name in TOP_FILES]
    for top in SEARCHED:
        found += [
            p
            for p in (ROOT / top).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix in SUFFIXES
        ]
    return found


def _texts() -> list[tuple[str, str]]:
    out = []
    for path in _files():
        try:
            out.append((str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue
    return out


def _anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _problem(source: Path, target: Path, anchor: str | None) -> str | None:
    if not target.exists():
        return "no such file"
    if anchor and target.suffix == ".md" and anchor[1:] not in _anchors(target):
        return f"no heading for {anchor}"
    return None


def test_every_path_and_doc_link_names_a_file_of_the_repository() -> None:
    missing = []
    for name, text in _texts():
        for m in PATH.finditer(text):
            if m.group(1) not in PLACEHOLDERS:
                why = _problem(ROOT / name, ROOT / m.group(1), m.group(2))
                if why:
                    missing.append(f"{name}: {m.group(0)} ({why})")
        if name.endswith(".md"):
            for m in LINK.finditer(text):
                why = _problem(ROOT / name, (ROOT / name).parent / m.group(1), m.group(2))
                if why:
                    missing.append(f"{name}: {m.group(0)} ({why})")
    assert missing == []


def test_nothing_points_at_notes_outside_the_repository_or_at_tracker_items() -> None:
    found = [
        f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for name, text in _texts()
        if name != "tests/unit/test_references.py"
        for pattern in (OUTSIDE, TRACKER)
        for m in pattern.finditer(text)
    ]
    assert found == []


def test_the_anchor_rule_matches_githubs() -> None:
    expected = {"kochava-s2s-and-identitylink", "durable-before-the-200", "segment-silent-200"}
    assert expected <= _anchors(ROOT / "docs" / "reference.md")
