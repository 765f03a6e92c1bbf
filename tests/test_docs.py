"""Every citation of the design in the code names a section of docs/design.md (design §4.1)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("neurons", "networks", "hardware", "train", "ipvae", "benchmarks", "tests",
           "tests_quality")
CITATION = re.compile(r"design(?:\.md)? §(\d+(?:\.\d+)*)", re.IGNORECASE)


def _sections() -> set[str]:
    heads = re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", (ROOT / "docs" / "design.md").read_text(),
                       flags=re.M)
    return set(heads)


def _code_files():
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".c", ".h", ".pyx") and ".venv" not in path.parts:
                yield path


def test_every_design_citation_resolves_to_a_section():
    sections = _sections()
    assert {"1", "1.1", "2", "2.1", "2.2", "2.3", "2.4", "3", "4.2", "7"} <= sections
    dangling, cited = [], 0
    for path in _code_files():
        for number in CITATION.findall(path.read_text(encoding="utf-8", errors="replace")):
            cited += 1
            if number not in sections:
                dangling.append(f"{path.relative_to(ROOT)}: §{number}")
    assert cited > 20  # the code does cite the design
    assert not dangling, "citations of sections docs/design.md does not have: " + ", ".join(dangling)


def test_the_code_cites_the_repository_document_not_an_outside_file():
    outside = [str(p.relative_to(ROOT)) for p in _code_files()
               if "DESIGN.md" in p.read_text(encoding="utf-8", errors="replace")
               and p.name != "test_docs.py"]
    assert not outside, "cite 'design §N' (docs/design.md), not DESIGN.md: " + ", ".join(outside)
    readme = (ROOT / "README.md").read_text()
    assert "docs/design.md" in readme and "DESIGN.md" not in readme
