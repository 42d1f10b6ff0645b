"""The table of properties (config/properties.py) against every property file: the default files are written from
it, and the comment of each other file's key gives the table's type and choices."""

import re

import pytest
import yaml
from recbole.config import Config

from conftest import REPO
from recbole_llmplugin.config import properties
from recbole_llmplugin.config.paths import properties_dir
from recbole_llmplugin.config.properties import PROPERTIES, Rule, written_files, yaml_value

COMMENTED = re.compile(r"^(\w+):.*#\s*\(([^)]*)\)")


def _commented_types(path):
    """{key: the '(type)' of its comment} of one property file's top-level lines."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = COMMENTED.match(line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def _drift(path):
    """The keys of ``path`` whose comment gives another type or other choices than the table."""
    return {
        key: (given, PROPERTIES[key].rule.comment_type)
        for key, given in _commented_types(path).items()
        if key in PROPERTIES and given != PROPERTIES[key].rule.comment_type
    }


def test_the_default_property_files_are_the_tables():
    for path, text in written_files(properties_dir()).items():
        assert path.read_text(encoding="utf-8") == text, f"{path} differs: python -m recbole_llmplugin.config"


def test_every_other_property_file_gives_the_tables_type_and_choices():
    paths = sorted((REPO / "properties").rglob("*.yaml")) + sorted((properties_dir() / "dataset").glob("*.yaml"))
    assert len(paths) > 20
    checked = 0
    for path in paths:
        assert _drift(path) == {}, path
        checked += len(set(_commented_types(path)) & set(PROPERTIES))
    assert checked > 300  # the profiles comment most of their keys


def test_a_changed_type_or_choice_is_drift(tmp_path, monkeypatch):
    path = tmp_path / "profile.yaml"
    path.write_text("lora_alpha: 16  # (int) LoRA scaling.\neval_mode: index  # (str: score | index) How.\n")
    assert _drift(path) == {"eval_mode": ("str: score | index", "str: score | index | generate | match")}
    monkeypatch.setitem(
        PROPERTIES, "lora_alpha", properties.Property("lora_alpha", Rule("float"), 16.0, "m", ("TALLRec",))
    )
    assert set(_drift(path)) == {"lora_alpha", "eval_mode"}
    # the written files follow the table: a changed default or choice is a difference
    rendered = properties.render("TALLRec")
    assert "lora_alpha: 16.0" in rendered and "# (float)" in rendered
    assert rendered != (properties_dir() / "model" / "TALLRec.yaml").read_text(encoding="utf-8")


def test_each_default_passes_its_own_rule_and_each_option_default_is_a_choice():
    for name, prop in PROPERTIES.items():
        if prop.default is properties.RECBOLE_DEFAULT or not prop.rule.check:
            continue
        assert prop.rule.problem(prop.default) is None, name


@pytest.mark.parametrize(
    "value", [None, True, False, 0, 20, 0.0001, 1e-12, 86400, "auto", "smollm2-135m", "none", "yes", "item {x}", ", "]
)
def test_written_values_read_back_equal_through_recboles_loader(value):
    loader = Config.__new__(Config)._build_yaml_loader()
    assert yaml.load(f"key: {yaml_value(value)}\n", Loader=loader)["key"] == value
    assert type(yaml.load(f"key: {yaml_value(value)}\n", Loader=loader)["key"]) is type(value)


def test_lora_alpha_is_an_integer_as_in_peft():
    from peft import LoraConfig

    assert LoraConfig.__dataclass_fields__["lora_alpha"].type in (int, "int")
    assert PROPERTIES["lora_alpha"].rule.kind == "int"


def test_a_models_keys_are_those_of_its_files():
    for model in properties.MODELS:
        loaded = yaml.safe_load((properties_dir() / "model" / f"{model}.yaml").read_text(encoding="utf-8"))
        declared = {name for name, prop in PROPERTIES.items() if model in prop.models}
        assert set(loaded) == declared, model


def test_the_errors_page_names_the_keys_and_namespaces_the_checks_know():
    """docs/errors.md against the table: each key an error line there begins with (`key: ...`) is a property of the
    table, of RecBole or of a benchmark file, and its list of the plugin's namespaces is the checks' own."""
    from recbole_llmplugin.config.validation import PLUGIN_PREFIXES, known_keys

    page = (REPO / "docs" / "errors.md").read_text(encoding="utf-8")
    quoted = set(re.findall(r"^\| `(\w+): ", page, flags=re.MULTILINE))
    assert quoted and not {k for k in quoted if k not in known_keys() and not k.startswith("benchmark_")}
    listed = re.search(r"an unknown key in the plugin's namespaces \(([^)]*)\)", page)
    assert listed and re.findall(r"`(\w+)`", listed.group(1)) == list(PLUGIN_PREFIXES)
