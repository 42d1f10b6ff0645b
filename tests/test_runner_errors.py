import subprocess
import sys

import pytest

from conftest import REPO
from recbole_llmplugin import get_model_class, register_model
from recbole_llmplugin.utils.errors import DatasetNotFoundError, LLMLoadError, UnknownModelError
from recbole_llmplugin.model.layers.llm_loading import load_llm
from recbole_llmplugin.model.abstract_llm_recommender import LLMRecommender
from recbole_llmplugin.quick_start.quick_start import build_config
from recbole_llmplugin.utils.registry import is_plugin_model


def test_plugin_and_recbole_models_resolve():
    assert get_model_class("LLMOnly").__name__ == "LLMOnly"
    assert get_model_class("ALLMRec").__name__ == "ALLMRec"
    assert get_model_class("SASRec").__module__.startswith("recbole.model")


def test_unknown_model_lists_both_kinds():
    with pytest.raises(UnknownModelError) as info:
        get_model_class("NoSuchRec")
    message = str(info.value)
    assert "NoSuchRec" in message and "LLMOnly" in message and "SASRec" in message and "BPR" in message


def test_register_model_is_one_line():
    @register_model
    class EchoRec(LLMRecommender):
        pass

    assert get_model_class("EchoRec") is EchoRec and is_plugin_model("EchoRec")


def test_register_model_takes_a_recbole_model_class_of_a_new_name():
    from recbole.model.sequential_recommender import SASRec

    from recbole_llmplugin.utils.errors import ConfigValueError

    with pytest.raises(ConfigValueError, match="give a RecBole model class"):
        register_model(object)
    with pytest.raises(ConfigValueError, match="register_model.SASRec.: RecBole has a model of that name"):
        register_model(type("SASRec", (SASRec,), {}))
    assert get_model_class("SASRec") is SASRec


def test_plugin_model_defaults_come_from_its_yaml(workdir, tiny_config):
    config, _ = build_config("LLMOnly", "tiny-synth", config_dict=tiny_config)
    assert config["epochs"] == 1  # user dict beats the model yaml
    config, _ = build_config(
        "LLMOnly", "tiny-synth", config_dict={k: v for k, v in tiny_config.items() if k != "epochs"}
    )
    assert config["epochs"] == 0  # recbole_llmplugin/properties/model/LLMOnly.yaml


def test_missing_dataset_is_one_clear_error(workdir):
    with pytest.raises(DatasetNotFoundError, match="no-such-data.inter"):
        build_config("SASRec", "no-such-data", config_dict={"data_path": str(workdir), "train_neg_sample_args": None})


@pytest.mark.parametrize("dataset", ["amazon-beauty-p5", "amazon-games-llmrank"])
def test_an_unconverted_amazon_set_names_the_converter(workdir, dataset):
    with pytest.raises(
        DatasetNotFoundError, match="convert it first: python -m recbole_llmplugin.data.amazon --source"
    ):
        build_config("SASRec", dataset, config_dict={"data_path": str(workdir), "train_neg_sample_args": None})


def test_bad_llm_path_is_one_clear_error(tmp_path):
    with pytest.raises(LLMLoadError, match="llm_path='.*not-a-model'"):
        load_llm(str(tmp_path / "not-a-model"))


def test_special_tokens_are_added_and_llm_frozen(tiny_llm):
    model, tokenizer = load_llm(tiny_llm, special_tokens=("[UserRep]", "[HistoryEmb]"))
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert tokenizer.convert_tokens_to_ids("[UserRep]") != tokenizer.unk_token_id
    assert len(tokenizer.tokenize("x [HistoryEmb] y")) == 3 or "[HistoryEmb]" in tokenizer.tokenize("x [HistoryEmb] y")
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model=NoSuchRec", "--dataset=ml-100k"], "unknown model 'NoSuchRec'"),
        (["--model=GRU4Rec", "--dataset=no-such-data", "--loss_type=BPR"], "dataset 'no-such-data'"),
        (["--model=SASRec", "--dataset=ml-100k"], "train_neg_sample_args"),
        (
            [
                "--model=LLMOnly",
                "--dataset=ml-100k",
                "--llm_path=/nonexistent/model",
                "--eval_args={'split':{'LS':'valid_and_test'},'group_by':'user','order':'TO','mode':'uni19'}",
            ],
            "llm_path='/nonexistent/model'",
        ),
        (
            ["--model=LLMOnly", "--dataset=ml-100k", "--config_files=a.yaml", "b.yaml"],  # RecBole drops b.yaml
            "'b.yaml' stands apart from --config_files=a.yaml: quote several property files as one argument",
        ),
        (["--model=LLMOnly", "--dataset=ml-100k", "ALLMRec"], "'ALLMRec' is not a --key=value argument"),
        (
            ["--model=ALLMRec", "--dataset=ml-100k", "--table_metrics=['hit@50']"],
            "table_metrics: 'hit@50' is not measured",
        ),
    ],
)
def test_cli_errors_are_one_line(workdir, args, expected):
    result = subprocess.run(
        [sys.executable, str(REPO / "run_recbole_llm.py"), *args, "--state=WARNING"],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=300,
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        line for line in result.stderr.splitlines() if "error" in line.lower()
    ][:1]
