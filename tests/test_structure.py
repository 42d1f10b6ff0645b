"""Package structure: no import circle between models and the runner; explicit registration, also of a model
written outside the package with the README's steps only."""

import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, TINY_DATASET

RUNNER_SIDE = {"quick_start", "runner", "backbones", "benchmark", "learning_curve", "bench", "compare", "cli"}


def _imported_by(module):
    """The plugin's modules that importing ``module`` alone (fresh interpreter) pulls in."""
    code = (
        f"import sys, {module}; print(' '.join(sorted(m.split('.', 1)[1] for m in sys.modules "
        "if m.startswith('recbole_llmplugin.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_models_never_import_the_runner():
    pulled = _imported_by("recbole_llmplugin.models.allmrec")
    assert "models.allmrec" in pulled and not pulled & RUNNER_SIDE, pulled & RUNNER_SIDE


@pytest.mark.parametrize(
    "module, allowed",
    [
        ("runner", {"runner"}),  # one RecBole run: no backbone step, no entry points
        ("backbones", {"runner", "backbones"}),
    ],
)
def test_runner_layers_import_downwards_only(module, allowed):
    pulled = _imported_by(f"recbole_llmplugin.{module}")
    assert pulled & RUNNER_SIDE == allowed
    assert not any(m.startswith("models") for m in pulled)  # the models load only when a model is looked up


def test_model_written_outside_the_package(workdir, tiny_config):
    """The README's steps: a model file, a property file, one register_model line; then run it by name."""
    (workdir / "echo_rec.py").write_text(textwrap.dedent('''
        from recbole_llmplugin.models.llm_only import LLMOnly

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
    from recbole_llmplugin.quick_start import build_config

    config, model_class = build_config("EchoRec", TINY_DATASET, config_dict=settings)
    assert model_class is EchoRec and config["prompt_history_len"] == 3  # its own YAML was read


def test_register_model_names_a_missing_property_file(tmp_path):
    from recbole_llmplugin import register_model
    from recbole_llmplugin.errors import ConfigValueError
    from recbole_llmplugin.models.llm_only import LLMOnly

    with pytest.raises(ConfigValueError, match="nothing.yaml' does not exist"):
        register_model(type("Other", (LLMOnly,), {}), properties=str(tmp_path / "nothing.yaml"))


def test_multi_stage_interface(workdir, tiny_config, tiny_encoder):
    """StagedTrainer trains each stage with the model's ``<stage>_loss``; plain LLM models read no stage keys."""
    from recbole_llmplugin.quick_start import build_config, prepare_data
    from recbole_llmplugin.errors import ConfigValueError
    from recbole_llmplugin.trainer import Stage, StagedTrainer

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
