"""The documentation agrees with the code: the option values in docs/allmrec.md are config.options's, their defaults
the property files', every page the README links exists and opens with what a reader does with it, and no page or
source file narrates how the package was built."""

import re

import pytest
import yaml

from conftest import REPO
from recbole_llmplugin.config.properties import choices

DOCS = REPO / "docs"


def _option_table():
    """{property: (values, default)} of the "Option values" table of docs/allmrec.md."""
    text = (DOCS / "allmrec.md").read_text(encoding="utf-8")
    section = text.split("## Option values", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            values = tuple(re.findall(r"`([^`]+)`", cells[1]))
            rows[cells[0].strip("`")] = (values, cells[2].strip("`"))
    return rows


def test_the_option_table_lists_config_options_values_and_the_yaml_defaults():
    table = _option_table()
    assert len(table) >= 6
    defaults = {}
    for name in ("overall.yaml", "model/ALLMRec.yaml"):
        defaults.update(yaml.safe_load((REPO / "recbole_llmplugin" / "properties" / name).read_text(encoding="utf-8")))
    for key, (values, default) in table.items():
        assert values == choices(key), key
        assert str(defaults[key]) == default, key


def test_the_readme_links_every_docs_page_and_each_opens_with_its_use():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert pages and all(f"(docs/{page})" in readme for page in pages)
    for page in pages:
        lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("# ") and lines[2].startswith("Read this page"), page
    assert len(readme.splitlines()) <= 250


# words that narrate how the package was built, not how to use it
PROCESS = re.compile(
    r"\b(?:[Ii]ssues? ?#?\d+|[Tt]asks? ?#?\d+|(?:this|that|a|the|work|earlier|next) sessions?|rounds? of work|"
    r"round (?:one|two|three|\d)|sprint|milestone|scratch (?:folder|path|file|script)|borrowed|the goal|our goal|"
    r"TODO|FIXME|XXX|[Ww]e|[Oo]ur|tried|these machines)\b|/tmp/"
)


FOLDERS = ["README.md", "docs", "recbole_llmplugin", "tests", "properties", ".ci", "dataset", "setup.py"]


@pytest.mark.parametrize("folder", FOLDERS + ["requirements.txt", "requirements-nodeps.txt"])
def test_no_text_narrates_how_it_was_built(folder):
    root = REPO / folder
    files = (
        [root] if root.is_file() else [p for p in root.rglob("*") if p.suffix in (".md", ".py", ".yaml", ".txt", "")]
    )
    found = []
    for path in files:
        if not path.is_file() or path.name == "test_docs.py" or "__pycache__" in path.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        found += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in PROCESS.finditer(text)]
    assert not found, found
