"""The docs point at code and tests that exist, and never outside the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULE_REF = re.compile(r"\b[Rr]ules? (\d+)")


def _test_names(path: Path) -> set[str]:
    found = re.findall(r"^\s*(?:async )?def (test_\w+)|^class (Test\w+)", path.read_text(), re.M)
    return {name for pair in found for name in pair if name}


def test_every_test_rules_md_names_exists():
    """docs/rules.md names the tests that prove each rule: each one is there."""
    text = (ROOT / "docs" / "rules.md").read_text()
    missing = []
    current = None  # a `::name` continues the last file named, maybe on an earlier line
    for line in text.splitlines():
        for match in re.finditer(r"`(tests/[\w/]+\.py)((?:::\w+)*)`|`::(\w+(?:::\w+)*)`", line):
            if match.group(1):
                current = ROOT / match.group(1)
                names = match.group(2).split("::")[1:]
            else:
                names = match.group(3).split("::")
            if current is None or not current.exists():
                missing.append(match.group(0))
                continue
            known = _test_names(current)
            missing += [f"{current.name}::{n}" for n in names if n not in known]
    assert not missing


def test_every_rule_number_in_the_code_is_a_rule_of_rules_md():
    """Code says "rule N"; docs/rules.md has a heading for every such N."""
    headings = set(re.findall(r"^## (\d+)\.", (ROOT / "docs" / "rules.md").read_text(), re.M))
    cited = set()
    for folder in ("domain", "workflows", "activities", "starter"):
        for path in (ROOT / folder).rglob("*.py"):
            cited |= set(RULE_REF.findall(path.read_text()))
    assert cited <= headings


def test_docs_and_code_point_only_inside_the_repository():
    """No doc or docstring sends a reader to a spec or a file that isn't in this repository."""
    outside = re.compile(r"\.\./shared|SPEC\.md|shared/seeds")
    offenders = [
        str(path.relative_to(ROOT))
        for pattern in ("docs/*.md", "README.md", "**/*.py")
        for path in ROOT.glob(pattern)
        if ".venv" not in path.parts
        and outside.search(path.read_text(errors="ignore"))
        and path.name != "test_docs.py"
    ]
    assert not offenders


CODE_PATH = re.compile(
    r"`((?:domain|workflows|activities|starter|tools|provider_sandbox)/[\w/]+\.(?:py|sql)|worker\.py)`"
    r"(?:\s*\(((?:`\w+`(?:,\s*)?)+)\))?"
)


def _defines(path: Path, name: str) -> bool:
    pattern = rf"^\s*(?:async def|def|class) {name}\b|^\s*{name}\s*[:=]"
    return re.search(pattern, path.read_text(), re.M) is not None


def test_every_code_path_the_docs_name_exists():
    """The docs name modules (and in parentheses what in them): each is there, so a newcomer
    following a doc never lands on a file or a function that moved."""
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for match in CODE_PATH.finditer(text):
            path = ROOT / match.group(1)
            if not path.exists():
                missing.append(f"{doc.name}: {match.group(1)}")
                continue
            names = re.findall(r"`(\w+)`", match.group(2) or "")
            missing += [
                f"{doc.name}: {match.group(1)} ({n})" for n in names if not _defines(path, n)
            ]
    assert not missing
