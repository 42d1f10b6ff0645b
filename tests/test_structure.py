"""Package structure: no import circle, models that never import the entry points; explicit registration, also of a
model written outside the package with the documented steps only."""

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from conftest import REPO, TINY_DATASET

PACKAGE = REPO / "recbole_llmplugin"


def _modules():
    """{dotted name: file} of every module of the package."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _import_graph():
    """{module: plugin modules it imports}, counting imports inside functions and ``importlib.import_module("...")``
    with a literal name; a parent package's ``__init__`` run by Python on the way is not an edge."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                ]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
                targets = [node.args[0].value] if isinstance(node.args[0], ast.Constant) else []
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph):
    cycles, state, path = [], {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_circle():
    graph = _import_graph()
    assert graph["recbole_llmplugin.model.layers.cf_backbone"]  # the graph sees the package's imports
    assert _cycles(graph) == []


def test_the_circle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def _reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_models_and_layers_never_reach_the_entry_points():
    graph = _import_graph()
    entry_points = {m for m in graph if m.startswith(("recbole_llmplugin.quick_start", "recbole_llmplugin.tools"))}
    for module in graph:
        if module.startswith(("recbole_llmplugin.model", "recbole_llmplugin.trainer", "recbole_llmplugin.data")):
            assert not _reachable(graph, module) & entry_points, module


def test_models_never_import_a_trainer_and_utils_nothing_above_them():
    """As in RecBole: a model declares its stages (``model.stage.Stage``), a trainer runs them and names their
    checkpoints; ``utils`` is the ground floor."""
    graph = _import_graph()
    for module, imported in graph.items():
        if module.startswith("recbole_llmplugin.model"):
            assert not {m for m in imported if m.startswith("recbole_llmplugin.trainer")}, module
        if module.startswith("recbole_llmplugin.utils"):
            assert not {m for m in imported if not m.startswith("recbole_llmplugin.utils")}, module
    sources = (REPO / "recbole_llmplugin" / "model").rglob("*.py")
    assert not [p for p in sources if re.search(r"from (recbole_llmplugin|\.\.?)\.?trainer", p.read_text())]


LONGEST_CLASS = 280  # lines: "about 250", a class that binds parts rather than holding them


def test_model_classes_stay_short_and_layers_stand_alone():
    """A model class keeps RecBole's contract and binds its parts; the parts (the LLM, prompts, candidate ranking,
    losses, draws) live in ``model/layers/`` and import no model class, so each is testable alone."""
    for path in (PACKAGE / "model").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= LONGEST_CLASS, f"{path.name}: class {node.name} has {length} lines"
    for module, imported in _import_graph().items():
        if module.startswith("recbole_llmplugin.model.layers"):
            above = {m for m in imported if m.startswith("recbole_llmplugin.model")}
            assert above <= {m for m in above if m.startswith("recbole_llmplugin.model.layers")}, module


def _replaced_methods(tree):
    """``obj.name = <a function defined in the enclosing function>``, or ``obj._sampler = ...`` on another object
    than ``self``: a method or part of a built object swapped after the fact."""
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        local = {n.name for n in ast.walk(function) if isinstance(n, ast.FunctionDef) and n is not function}
        for node in ast.walk(function):
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                if not isinstance(target, ast.Attribute):
                    continue
                owner = target.value.id if isinstance(target.value, ast.Name) else None
                if isinstance(node.value, ast.Name) and node.value.id in local and owner != "self":
                    found.append(f"{owner}.{target.attr} = {node.value.id}")
                elif target.attr == "_sampler" and owner != "self":
                    found.append(f"{owner}._sampler")
    return found


def test_data_preparation_replaces_no_method_of_a_built_object():
    """The run's data is one step (``data.preparation``): the scenario split, the user sample and the fixed
    candidates each take what the step before returned; none swaps a method or a sampler of RecBole's objects."""
    for path in [*(PACKAGE / "data").rglob("*.py"), *(PACKAGE / "sampler").rglob("*.py")]:
        assert not _replaced_methods(ast.parse(path.read_text(encoding="utf-8"))), path
    patched = (
        "def f(dataset):\n    build = dataset.build\n    def g():\n        return build()\n    dataset.build = g\n"
    )
    assert _replaced_methods(ast.parse(patched)) == ["dataset.build = g"]
    assert _replaced_methods(ast.parse("def f(loader, s):\n    loader._sampler = s\n")) == ["loader._sampler"]


# a run's files, in the order a run enters them, each importing only those after it: the record of a result, the
# checked config, one RecBole run, the backbone step, the cross-domain test, the entry points that compose them
RUN_ORDER = ("cli", "compare", "quick_start", "cross_domain", "backbones", "runner", "run_config", "record")


def test_a_runs_files_import_only_the_steps_below_them():
    """``quick_start/`` is entered downward: each file imports only the files after it in ``RUN_ORDER`` (one RecBole
    run imports neither the backbone step, the cross-domain test nor an entry point), and none below the entry points
    reaches the tools."""
    graph = _import_graph()
    package = "recbole_llmplugin.quick_start."
    assert {m[len(package) :] for m in graph if m.startswith(package)} == set(RUN_ORDER)
    for index, name in enumerate(RUN_ORDER):
        imported = {m[len(package) :] for m in graph[package + name] if m.startswith(package)}
        assert imported <= set(RUN_ORDER[index + 1 :]), f"{name} imports {imported - set(RUN_ORDER[index + 1 :])}"
        if index >= RUN_ORDER.index("quick_start"):
            reached = _reachable(graph, package + name)
            assert not {m for m in reached if m.startswith("recbole_llmplugin.tools")}, name


def test_importing_the_package_registers_its_models():
    code = "import recbole_llmplugin.utils.registry as r; print(' '.join(r.plugin_model_names()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ALLMRec", "LLMOnly", "MLPLLM", "TALLRec", "UniSRec"]


def test_model_written_outside_the_package(workdir, tiny_config):
    """The documented steps (docs/development.md): a model file, a property file, one register_model line; then run it by name."""
    (workdir / "echo_rec.py").write_text(textwrap.dedent('''
        from recbole_llmplugin.model.llm_recommender.llm_only import LLMOnly

        class EchoRec(LLMOnly):
            """LLMOnly under another name, with its own defaults."""
    '''))
    (workdir / "EchoRec.yaml").write_text("prompt_history_len: 3               # (int) Items shown.\n")
    sys.path.insert(0, str(workdir))
    try:
        from echo_rec import EchoRec

        from recbole_llmplugin import register_model, run_recbole_llm

        register_model(EchoRec, properties=str(workdir / "EchoRec.yaml"))
        settings = {k: v for k, v in tiny_config.items()}
        result = run_recbole_llm("EchoRec", TINY_DATASET, config_dict={**settings, "eval_user_sample": 5}, saved=False)
    finally:
        sys.path.remove(str(workdir))
    assert result["model"] == "EchoRec" and "hit@1" in result["test_result"]
    from recbole_llmplugin.quick_start.quick_start import build_config

    config, model_class = build_config("EchoRec", TINY_DATASET, config_dict=settings)
    assert model_class is EchoRec and config["prompt_history_len"] == 3  # its own YAML was read


def test_register_model_names_a_missing_property_file(tmp_path):
    from recbole_llmplugin import register_model
    from recbole_llmplugin.utils.errors import ConfigValueError
    from recbole_llmplugin.model.llm_recommender.llm_only import LLMOnly

    with pytest.raises(ConfigValueError, match="nothing.yaml' does not exist"):
        register_model(type("Other", (LLMOnly,), {}), properties=str(tmp_path / "nothing.yaml"))


def test_multi_stage_interface(workdir, tiny_config, tiny_encoder):
    """StagedTrainer trains each stage with the model's ``<stage>_loss``; plain LLM models read no stage keys."""
    from recbole_llmplugin.quick_start.quick_start import build_config, prepare_data
    from recbole_llmplugin.utils.errors import ConfigValueError
    from recbole_llmplugin.model.stage import Stage
    from recbole_llmplugin.trainer.trainer import StagedTrainer

    with pytest.raises(ConfigValueError, match="stage2_objective: 'bogus' is not one of"):  # checked, used or not
        build_config("LLMOnly", TINY_DATASET, config_dict={**tiny_config, "stage2_objective": "bogus"})
    config, model_class = build_config(
        "LLMOnly", TINY_DATASET, config_dict={**tiny_config, "stage2_objective": "index"}
    )
    _, train_data, _, _ = prepare_data(config)
    model = model_class(config, train_data._dataset)  # stage2_objective is not read: no index-mode error
    assert model.objective is None and model.n_candidates is None

    config, model_class = build_config("TALLRec", TINY_DATASET, config_dict={**tiny_config, "stage2_candidates": 5})
    model = model_class(config, train_data._dataset)
    trainer = StagedTrainer(config, model)
    trainer._reset_for(Stage("stage2", 1, 1e-3, 4, "unused"))
    assert trainer.stage_loss == model.stage2_loss
    model.train()
    assert model.llm.training  # LoRA trains inside the LLM: dropout on
    model.eval()
    assert not model.llm.training


def test_a_one_stage_model_without_set_stage_logs_what_it_trains(workdir, tiny_config):
    """A registered LLMRecommender that trains through RecBole's plain loop (no stages of its own) still gets its
    log lines: the trained parameters are those requiring grad."""
    from torch import nn

    from recbole_llmplugin.model.abstract_llm_recommender import LLMRecommender
    from recbole_llmplugin.quick_start.quick_start import build_config, prepare_data

    class PlainRec(LLMRecommender):
        def __init__(self, config, dataset):
            super().__init__(config, dataset)
            self.llm.requires_grad_(False)
            self.head = nn.Linear(4, 4)

    settings = {**tiny_config, "stage2_candidates": 5, "stage2_objective": "generate"}  # its stage-2 keys
    config, _ = build_config("LLMOnly", TINY_DATASET, config_dict=settings)
    _, train_data, _, _ = prepare_data(config)
    text = str(PlainRec(config, train_data._dataset))
    assert text.startswith("PlainRec: frozen LLM ") and "stage2 trains 20 parameters: head 20" in text


def test_an_install_without_the_checkout_finds_the_properties_in_the_package(tmp_path):
    """``pip install --target`` (no editable link, no data files under a prefix), then a run from another folder
    loads a model's properties from the installed package."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "README.md"):
        (source / name).write_bytes((REPO / name).read_bytes())
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PACKAGE, source / "recbole_llmplugin", ignore=ignore)
    target, elsewhere = tmp_path / "target", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target"]
    subprocess.run([*pip, str(target), str(source)], check=True, capture_output=True, cwd=tmp_path)
    script = textwrap.dedent("""
        import recbole_llmplugin
        from recbole.config import Config
        from recbole_llmplugin.quick_start.quick_start import property_files
        from recbole_llmplugin.utils.registry import get_model_class
        files = property_files("ALLMRec", "ml-100k")
        config = Config(model=get_model_class("ALLMRec"), dataset="ml-100k", config_file_list=files)
        print(recbole_llmplugin.__file__)
        print(*files, sep="\\n")
        print(config["stage1_epochs"], config["prompt_template"] is not None)
        """)
    env = dict(os.environ, PYTHONPATH=str(target))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    installed = target / "recbole_llmplugin"
    assert lines[0] == str(installed / "__init__.py")
    assert lines[1:4] == [str(installed / "properties" / name) for name in PROPERTY_FILES]
    expected = yaml.safe_load((PACKAGE / "properties" / "model" / "ALLMRec.yaml").read_text(encoding="utf-8"))
    assert lines[4] == f"{expected['stage1_epochs']} True"


PROPERTY_FILES = ("overall.yaml", "dataset/ml-100k.yaml", "model/ALLMRec.yaml")
