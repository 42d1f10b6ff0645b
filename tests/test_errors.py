"""Every bad input a user can give ends in ONE line on stderr (``error: ...``, exit code 2) that names the value,
the key or file, and the fix, before any training: a table of cases run through the command line's ``main``
in-process (tiny models, tiny-synth)."""

import os
import pickle
import shutil
import sys

import numpy as np
import pytest
import torch
import yaml

from conftest import BACKBONE_PROPS, REPO, TINY_DATASET, train_backbone
from recbole_llmplugin.quick_start.cli import main

DATA = REPO / "dataset"
UNI9 = {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "uni9"}


class Hostile:  # a pickle that would run code when loaded
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-target",))


def _dataset_copy(tmp_path, name, edit_item=None, drop_item=False, encoding="utf-8", edit_inter=None, extra_item=""):
    folder = tmp_path / "data" / name
    folder.mkdir(parents=True)
    source = DATA / TINY_DATASET
    inter = (source / f"{TINY_DATASET}.inter").read_text(encoding="utf-8").splitlines()
    (folder / f"{name}.inter").write_text("\n".join(edit_inter(inter) if edit_inter else inter) + "\n")
    if not drop_item:
        lines = (source / f"{TINY_DATASET}.item").read_text(encoding="utf-8").splitlines()
        lines = [lines[0]] + [edit_item(line) if edit_item else line for line in lines[1:]]
        lines += [extra_item] if extra_item else []
        text = "\n".join(lines) + "\n"
        (folder / f"{name}.item").write_bytes(text.encode(encoding, errors="replace"))
    return str(tmp_path / "data")


def _blank_title(line):
    item, _, year = line.split("\t")
    return f"{item}\t\t{year}"


def _tab_in_title(line):
    item, title, year = line.split("\t")
    return f"{item}\t{title}\tPart\t{year}" if item == "2" else line


def _header_only(lines):
    return lines[:1]


def _yesterday(lines):
    return lines[:4] + [lines[4].rsplit("\t", 1)[0] + "\tyesterday"] + lines[5:]


def _no_timestamp(lines):
    return [line.rsplit("\t", 1)[0] for line in lines]


def _latin1(line):
    return line.replace("東京", "Café")  # representable in latin-1: the file is valid latin-1, not utf-8


# case id -> (model, command-line properties, YAML-file properties, expected text of the one line)
CASES = {
    # misspelt or unused keys
    "misspelt llm_path": ("LLMOnly", ["--llm_pth=/x"], {}, "unknown property 'llm_pth': did you mean 'llm_path'?"),
    "misspelt stage2_epochs": ("ALLMRec", ["--stage2_epoch=3"], {}, "did you mean 'stage2_epochs'?"),
    "misspelt in a file": ("LLMOnly", [], {"eval_user_sampel": 5}, "did you mean 'eval_user_sample'?"),
    # ranges
    "epochs 0 with an auto backbone": ("ALLMRec", ["--epochs=0", "--cf_checkpoint=auto"], {}, "would leave"),
    "epochs 0 for a RecBole model": ("GRU4Rec", ["--epochs=0"], {}, "epochs: 0 would leave GRU4Rec untrained"),
    "stage2_epochs 0": ("ALLMRec", ["--stage2_epochs=0"], {}, "stage2_epochs: 0 must be an integer >= 1"),
    "stage1_epochs 0": ("ALLMRec", ["--stage1_epochs=0"], {}, "stage1_epochs: 0 must be an integer >= 1"),
    "negative history": ("LLMOnly", ["--prompt_history_len=-3"], {}, "prompt_history_len: -3 must be an integer"),
    "stage2_epochs abc": ("ALLMRec", ["--stage2_epochs=abc"], {}, "stage2_epochs: 'abc' must be an integer"),
    "stage2_batch_size 0": ("ALLMRec", ["--stage2_batch_size=0"], {}, "stage2_batch_size: 0 must be"),
    "negative learning rate": ("ALLMRec", ["--stage2_learning_rate=-0.1"], {}, "stage2_learning_rate: -0.1 must be"),
    "zero learning rate": ("ALLMRec", ["--stage1_learning_rate=0"], {}, "stage1_learning_rate: 0 must be a number > 0"),
    "llm_eval_user_batch 0": ("LLMOnly", ["--llm_eval_user_batch=0"], {}, "llm_eval_user_batch: 0 must be"),
    "eval_user_sample -5": ("LLMOnly", ["--eval_user_sample=-5"], {}, "eval_user_sample: -5 must be an integer >= 1"),
    "train_batch_size 0": ("GRU4Rec", ["--train_batch_size=0"], {}, "train_batch_size: 0 must be"),
    "learning_rate 0": ("GRU4Rec", ["--learning_rate=0"], {}, "learning_rate: 0 must be a number > 0"),
    "MAX_ITEM_LIST_LENGTH 0": ("LLMOnly", ["--MAX_ITEM_LIST_LENGTH=0"], {}, "MAX_ITEM_LIST_LENGTH: 0 must be"),
    "unknown plugin key": ("ALLMRec", ["--stage2_lr=0.01"], {}, "'stage2_lr': no RecBole or plugin property has that"),
    "unknown plugin key, nearest named": ("LLMOnly", ["--llm_foo=1"], {}, "the nearest is 'llm_"),
    "unknown template placeholder": (
        "LLMOnly",
        [],
        {"prompt_template": "Seen: {history}. Next of {candidates}? {foo}"},
        "prompt_template: 'Seen: {history}. Next of {candidates}? {foo}' has {foo}, which is not one of",
    ),
    "two user tokens": (
        "ALLMRec",
        [],
        {"prompt_template": "{user_token}Seen: {history}. Next of {candidates}?{user_token}"},
        "has {user_token} 2 times; keep one",
    ),
    "two user tokens, command line": (
        "ALLMRec",
        ["--prompt_template={user_token}Seen: {history}. Next of {candidates}?{user_token}"],
        {},
        "has {user_token} 2 times; keep one",
    ),
    "cf_model not sequential": (
        "ALLMRec",
        ["--cf_model=Pop", "--cf_checkpoint=auto"],
        {},
        "cf_model: 'Pop' is a traditional model",
    ),
    "checkpoint_dir a file": (
        "LLMOnly",
        ["--checkpoint_dir=/etc/hostname"],
        {},
        "checkpoint_dir: '/etc/hostname' is a",
    ),
    "checkpoint_dir unwritable": ("SASRec", ["--checkpoint_dir=/proc/llm-ckpt"], {}, "cannot be written"),
    "eval_mode match, match untrained": ("ALLMRec", ["--eval_mode=match"], {}, "eval_mode: match ranks by the CF"),
    "eval_mode match without a CF match": ("LLMOnly", ["--eval_mode=match"], {}, "'match' is not one of score, index"),
    "metric misspelt": ("SASRec", ["--metrics=['Hit','NDGC']"], {}, "metrics: 'NDGC' is not a RecBole metric (did you"),
    "mode uni0": (
        "SASRec",
        [],
        {"eval_args": {**UNI9, "mode": "uni0"}},
        "eval_args mode uni0 ranks each user's target",
    ),
    "seed abc": ("SASRec", ["--seed=abc"], {}, "seed: 'abc' must be an integer >= 0"),
    "weight_decay -1": ("SASRec", ["--weight_decay=-1"], {}, "weight_decay: -1 must be a number >= 0"),
    "encoding unknown": ("SASRec", ["--encoding=nope"], {}, "encoding: 'nope' is not a text encoding"),
    "field_separator wrong": ("SASRec", ["--field_separator=,"], {}, "(columns split at field_separator ',')"),
    "model empty": ("", [], {}, "--model is empty"),
    "nproc 0": ("LLMOnly", ["--nproc=0"], {}, "--nproc=0; give 1 or more processes"),
    "topk a word": ("SASRec", [], {"topk": "ten"}, "SASRec on tiny-synth: The topk [ten] must be"),
    "random order for a sequential model": ("SASRec", [], {"eval_args": {**UNI9, "order": "RO"}}, "set order TO"),
    "USER_ID_FIELD not a column": ("SASRec", [], {"USER_ID_FIELD": "uid"}, "USER_ID_FIELD: 'uid' is not a loaded"),
    "filters leave nothing": ("SASRec", [], {"user_inter_num_interval": "[1000,inf)"}, "leave no interactions"),
    "checkpoint_dir empty": ("SASRec", [], {"checkpoint_dir": ""}, "checkpoint_dir is empty; give a folder"),
    "valid_metric not computed": (
        "SASRec",
        ["--metrics=['Hit','AveragePopularity']"],
        {},
        "valid_metric: NDCG@5 is not",
    ),
    "valid_metric cut-off not in topk": ("SASRec", ["--valid_metric=Hit@20"], {}, "valid_metric: Hit@20 asks for @20"),
    "stage2_candidates 1": ("TALLRec", ["--stage2_candidates=1"], {}, "stage2_candidates: 1 must be an integer >= 2"),
    "stage1_alpha -1": ("ALLMRec", ["--stage1_alpha=-1"], {}, "stage1_alpha: -1 must be a number >= 0"),
    "lora_dropout 1.5": ("TALLRec", ["--lora_dropout=1.5"], {}, "lora_dropout: 1.5 must be a number >= 0 and < 1"),
    "item_text_max_tokens 0": ("LLMOnly", ["--item_text_max_tokens=0"], {}, "item_text_max_tokens: 0 must be"),
    "rerank_topk 0": ("ALLMRec", ["--rerank_topk=0"], {}, "rerank_topk: 0 must be an integer >= 1"),
    "adam_betas scalar": ("ALLMRec", ["--adam_betas=0.9"], {}, "adam_betas: 0.9 must be a list"),
    "prompt_bos string": ("LLMOnly", [], {"prompt_bos": "yes"}, "prompt_bos: 'yes' must be True or False"),
    # enums (typos are errors whether the model reads the key or not)
    "eval_mode typo": ("LLMOnly", ["--eval_mode=scor"], {}, "eval_mode: 'scor' is not one of score, index, generate"),
    "joint_embedding typo, unused": ("LLMOnly", ["--joint_embedding=cff"], {}, "joint_embedding: 'cff' is not one of"),
    "joint_embedding typo, MLPLLM": ("MLPLLM", ["--joint_embedding=txt"], {}, "joint_embedding: 'txt' is not one of"),
    "objective typo": ("TALLRec", ["--stage2_objective=ranks"], {}, "stage2_objective: 'ranks' is not one of"),
    "eval_candidates typo": ("LLMOnly", ["--eval_candidates=fixd"], {}, "eval_candidates: 'fixd' is not one of"),
    "llm_dtype typo": ("LLMOnly", ["--llm_dtype=fp17"], {}, "llm_dtype: 'fp17' is not one of"),
    "architecture typo": ("ALLMRec", ["--allmrec_architecture=offical"], {}, "allmrec_architecture: 'offical'"),
    "text_encoder_trainable typo": ("ALLMRec", ["--text_encoder_trainable=some"], {}, "text_encoder_trainable: 'some'"),
    "8bit on CPU": ("LLMOnly", ["--llm_quantization=8bit"], {}, "llm_quantization: 8bit needs CUDA and bitsandbytes"),
    # data-dependent, before any training
    "more training candidates than items": ("TALLRec", ["--stage2_candidates=100"], {}, "stage2_candidates: 100 but"),
    "uniN above the unseen items": ("LLMOnly", [], {"eval_args": {**UNI9, "mode": "uni39"}}, "mode uni39: "),
    "full ranking with a retriever that is not sequential": (
        "LLMOnly",
        ["--rerank_retriever=Pop"],
        {"eval_args": {**UNI9, "mode": "full"}},
        "rerank_retriever: 'Pop' is not a RecBole sequential model",
    ),
    "full ranking cut beyond the retrieved items": (
        "LLMOnly",
        ["--rerank_topk=3"],
        {"eval_args": {**UNI9, "mode": "full"}},
        "set rerank_topk >= ",
    ),
    "prompt without history": ("LLMOnly", ["--prompt_template=Pick one: {candidates}"], {}, "must contain {history}"),
    # files
    "config file missing": ("LLMOnly", ["--config_files=nowhere.yaml"], None, "'nowhere.yaml' does not exist"),
    "config file does not parse": ("LLMOnly", [], "epochs: [1\n", "YAML does not parse"),
    "config file is a list": ("LLMOnly", [], "- 1\n- 2\n", "holds a list, not 'key: value' lines"),
    "benchmark file missing": ("LLMOnly", ["--benchmark=nowhere.yaml"], None, "benchmark file 'nowhere.yaml' does not"),
    "latin-1 item file": ("LLMOnly", ["data:latin1"], {}, "is not utf-8 text"),
    "all titles empty": ("LLMOnly", ["data:blank"], {}, "none of the 40 items has text"),
    "no item file": ("ALLMRec", ["data:noitem", "--cf_checkpoint=auto"], {}, "LLM models need item text"),
    "tab inside a title": ("SASRec", ["data:tab"], {}, ".item' line 3 has 4 fields, the header has 3"),
    "duplicate item id": ("ALLMRec", ["data:dupitem", "--cf_checkpoint=auto"], {}, "lines 2 and 42 both describe"),
    "interactions: header only": ("SASRec", ["data:norows"], {}, ".inter' has a header and no rows"),
    "non-numeric timestamp": ("SASRec", ["data:yesterday"], {}, "line 5: timestamp:float is 'yesterday', not a"),
    "load_col column missing": ("SASRec", ["data:notime"], {}, "load_col: inter lists timestamp, which"),
    "time order, time not loaded": (
        "SASRec",
        [],
        {"load_col": {"inter": ["user_id", "item_id"]}},
        "eval_args order TO sorts by timestamp, which is not loaded",
    ),
    "dataset missing, no profile": ("SASRec", ["--dataset=no-such-data", "--config_files="], None, "no-such-data'"),
    # the command line
    "key given twice": ("SASRec", ["--epochs=1", "--epochs=2"], {}, "--epochs is given twice (1, then 2)"),
    "unquoted dict": ("SASRec", ["--load_col={'inter':", "['user_id','item_id']}"], {}, "is cut short"),
    "'=' inside a value": ("LLMOnly", ["--prompt_template=a=b"], {}, "holds '=', which RecBole's command line"),
    "config_files a folder": ("LLMOnly", ["--config_files=."], None, "config file '.' is a folder"),
    # models and checkpoints
    "llm_path missing folder": ("LLMOnly", ["--llm_path=/nonexistent/model"], {}, "llm_path='/nonexistent/model'"),
    "llm_path is an encoder": ("LLMOnly", ["llm:encoder"], {}, "not a causal (next-token) LM"),
    "text_encoder unknown name": ("ALLMRec", ["--text_encoder=no-such-encoder-xyz"], {}, "text_encoder='no-such"),
    "cf_checkpoint missing": ("ALLMRec", ["--cf_checkpoint=/nonexistent.pth"], {}, "is not a file"),
    "cf_checkpoint corrupt": ("ALLMRec", ["ckpt:corrupt"], {}, "is not a readable torch checkpoint"),
    "cf_checkpoint hostile": ("ALLMRec", ["ckpt:hostile"], {}, "refused (it could run code)"),
    "cf_checkpoint not sequential": ("ALLMRec", ["ckpt:bpr"], {}, "holds BPR, not a sequential model"),
    "foreign candidate file": ("LLMOnly", ["ckpt:candidates"], {}, "was drawn for other interactions"),
    "candidate file a folder": (
        "SASRec",
        ["--eval_candidates_file=/tmp"],
        {},
        "eval_candidates_file: '/tmp' is a folder",
    ),
    "candidate file unwritable": (
        "SASRec",
        ["--eval_candidates_file=/proc/c.npz"],
        {},
        "eval_candidates_file: '/proc'",
    ),
    "candidate file not an npz": ("SASRec", ["ckpt:textfile"], {}, "is not a candidate file the plugin wrote"),
    "candidate file truncated": ("SASRec", ["ckpt:truncated"], {}, "is not a candidate file the plugin wrote (not an"),
    "text_encoder empty folder": ("ALLMRec", ["empty:text_encoder", "--cf_checkpoint=auto"], {}, "could not be loaded"),
    "llm_path empty folder": ("LLMOnly", ["empty:llm_path"], {}, "could not be loaded as a causal LM"),
    "llm_path without weights": ("LLMOnly", ["llm:noweights"], {}, "holds a config and a tokenizer but no weights"),
    "unknown model": ("NoSuchRec", [], {}, "unknown model 'NoSuchRec'"),
}


@pytest.fixture(scope="module")
def bpr_checkpoint(tmp_path_factory, tiny_llm):
    folder = tmp_path_factory.mktemp("bpr")
    props = {
        "data_path": str(DATA),
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "eval_args": UNI9,
        "show_progress": False,
        "state": "WARNING",
        "epochs": 1,
    }
    return train_backbone(props, folder, model="BPR")


def _resolve(args, tmp_path, tiny_llm, tiny_encoder, backbone, bpr_checkpoint):
    out = []
    for arg in args:
        kind, _, what = arg.partition(":")
        if kind == "data":
            edits = {
                "latin1": dict(edit_item=_latin1, encoding="latin-1"),
                "blank": dict(edit_item=_blank_title),
                "noitem": dict(drop_item=True),
                "tab": dict(edit_item=_tab_in_title),
                "dupitem": dict(extra_item="1\tAnother Title\t1999"),
                "norows": dict(edit_inter=_header_only),
                "yesterday": dict(edit_inter=_yesterday),
                "notime": dict(edit_inter=_no_timestamp),
            }[what]
            out += [f"--data_path={_dataset_copy(tmp_path, TINY_DATASET, **edits)}"]
        elif kind == "llm" and what == "noweights":
            folder = tmp_path / "llm-noweights"
            shutil.copytree(tiny_llm, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
            out.append(f"--llm_path={folder}")
        elif kind == "llm":
            out.append(f"--llm_path={tiny_encoder}")  # a sentence-transformers BERT folder
        elif kind == "empty":
            (tmp_path / "empty").mkdir(exist_ok=True)
            out.append(f"--{what}={tmp_path / 'empty'}")
        elif kind == "ckpt":
            path = tmp_path / f"{what}.pth"
            if what == "corrupt":
                path.write_bytes(b"PK\x03\x04 not really a zip file" * 10)
            elif what == "hostile":
                torch.save({"config": Hostile(), "state_dict": {}}, path)
            elif what == "bpr":
                path = bpr_checkpoint
            elif what in ("candidates", "textfile", "truncated"):
                path = tmp_path / "candidates.npz"
                tokens = {f"{p}_item_tokens": np.array([["1"] * 9]) for p in ("valid", "test")}
                np.savez(
                    path,
                    n_neg=np.array(9),
                    seed=np.array(1),
                    data_fingerprint=np.array("0123456789ab"),
                    user_tokens=np.array(["1"]),
                    **tokens,
                )
                if what == "textfile":
                    path.write_text("not candidates\n")
                elif what == "truncated":
                    path.write_bytes(path.read_bytes()[:200])
                out.append(f"--eval_candidates_file={path}")
                out.append("--eval_candidates=fixed")
                continue
            out.append(f"--cf_checkpoint={path}")
        else:
            out.append(arg)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line(case, workdir, tiny_config, tiny_llm, tiny_encoder, backbone, bpr_checkpoint, capsys):
    model, args, file_props, expected = CASES[case]
    props = {
        **tiny_config,
        "text_encoder": tiny_encoder,
        "cf_checkpoint": backbone,
        **BACKBONE_PROPS,
        "epochs": 1,
        "eval_args": UNI9,
    }
    args = _resolve(args, workdir, tiny_llm, tiny_encoder, backbone, bpr_checkpoint)
    base = workdir / "base.yaml"
    base.write_text(yaml.safe_dump(props, allow_unicode=True))
    files = [str(base)]
    if isinstance(file_props, dict) and file_props:
        (workdir / "case.yaml").write_text(yaml.safe_dump(file_props, allow_unicode=True))
        files.append(str(workdir / "case.yaml"))
    elif isinstance(file_props, str):
        (workdir / "case.yaml").write_text(file_props)
        files.append(str(workdir / "case.yaml"))
    if not any(a.startswith("--config_files=") for a in args):
        args = args + [f"--config_files={' '.join(files)}"]
    dataset = [] if any(a.startswith("--dataset=") for a in args) else [f"--dataset={TINY_DATASET}"]
    argv = [f"--model={model}", *dataset, *args]
    old_argv = sys.argv
    sys.argv = ["run_recbole_llm.py", *argv]  # RecBole's Config reads the command line itself
    try:
        code = main(argv)
    finally:
        sys.argv = old_argv
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and expected in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert not list(workdir.glob("saved/**/*.safetensors")), "trained something before failing"
    assert not list(workdir.glob("saved/cf_backbones/*.pth")), "trained a backbone before failing"


def test_hostile_pickle_never_runs(tmp_path):
    """The restricted loader refuses any global that is not a RecBole checkpoint type (here a function)."""
    from recbole_llmplugin.utils.checkpoints import load_recbole_checkpoint
    from recbole_llmplugin.utils.errors import ConfigValueError

    path = tmp_path / "hostile.pth"
    torch.save({"x": Hostile()}, path, pickle_protocol=4)
    with pytest.raises(ConfigValueError, match="shutil.rmtree"):
        load_recbole_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        from recbole_llmplugin.utils.checkpoints import restricted_pickle

        with open(tmp_path / "plain.pkl", "wb") as handle:
            pickle.dump(Hostile(), handle)
        with open(tmp_path / "plain.pkl", "rb") as handle:
            restricted_pickle.load(handle)


def test_an_unwritable_model_cache_is_one_line(monkeypatch):
    """The packaged LLM is converted once into the cache folder: one that cannot be written names the variable."""
    from recbole_llmplugin.utils.errors import LLMLoadError
    from recbole_llmplugin.model.layers.llm_loading import resolve_llm_path

    monkeypatch.setenv("RECBOLE_LLM_CACHE", "/proc/no-cache-here")
    with pytest.raises(LLMLoadError, match="cannot write its model folder .* set RECBOLE_LLM_CACHE to a writable"):
        resolve_llm_path("smollm2-135m")


def test_a_file_that_is_no_pickle_is_unreadable_not_refused(tmp_path):
    """Garbage is "not a readable torch checkpoint"; only a foreign global is "refused (it could run code)"."""
    from recbole_llmplugin.utils.checkpoints import load_recbole_checkpoint
    from recbole_llmplugin.utils.errors import ConfigValueError

    path = tmp_path / "text.pth"
    path.write_text("version 2\n")
    with pytest.raises(ConfigValueError, match="is not a readable torch checkpoint .UnpicklingError: invalid load key"):
        load_recbole_checkpoint(path)


def test_a_run_with_local_models_opens_no_socket(workdir, allmrec_config, monkeypatch):
    """Local LLM and text encoder (as the defaults are): the hub is switched off and nothing touches the network."""
    import socket

    import huggingface_hub.constants

    from recbole_llmplugin import run_recbole_llm

    attempts = []

    def refuse(self_or_address, *args, **kwargs):
        attempts.append((self_or_address, args))
        raise OSError("network access in a local run")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # as in a fresh process
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    result = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=allmrec_config)
    assert os.path.isfile(result["saved_model_file"])  # it trained and evaluated, offline
    assert attempts == []
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"


def test_pairwise_model_gets_its_negatives_back(workdir, tiny_config, caplog):
    """A shared profile turns training negatives off for sequential models (``train_neg_sample_args: ~``); BPR
    cannot train without them: it gets RecBole's default ones, and the log says so (RecBole would KeyError)."""
    from recbole_llmplugin import run_recbole_llm

    props = {**tiny_config, "train_neg_sample_args": None, "epochs": 1, "embedding_size": 8}
    result = run_recbole_llm("BPR", TINY_DATASET, config_dict=props)
    assert result["best_valid_result"] is not None  # trained and validated (RecBole raises KeyError without negatives)
    assert "BPR is a pairwise model: training negatives turned back on" in caplog.text


def test_the_errors_page_counts_these_cases():
    import re

    page = (REPO / "docs" / "errors.md").read_text(encoding="utf-8")
    counted = re.search(r"`tests/test_errors.py` runs (\d+) cases", page)
    assert counted and int(counted.group(1)) == len(CASES)


def test_unknown_key_outside_the_plugins_namespaces_is_a_warning(workdir, tiny_config, caplog):
    """A key RecBole and the plugin do not define, outside the plugin's prefixes, may be the user's own: the run goes
    on and the log names it."""
    from recbole_llmplugin.quick_start.quick_start import build_config

    config, _ = build_config("SASRec", TINY_DATASET, config_dict={**tiny_config, "foo_bar": 1})
    assert config["foo_bar"] == 1
    assert "foo_bar: no RecBole or plugin property has that name" in caplog.text


@pytest.mark.parametrize(
    "module, argv, expected",
    [
        (
            "data.amazon",
            ["--source=/nonexistent", "--output=out"],
            "--source '/nonexistent' has no amazon-games/Games-6k",
        ),
        ("data.amazon", ["--source=SHARED", "--output=/etc/hostname"], "--output '/etc/hostname' is a file"),
        ("tools.learning_curve", ["--points=abc", "--label=x"], "--points=abc: give training-example counts"),
        ("tools.learning_curve", ["--dataset=no-such-data", "--label=x"], "dataset 'no-such-data': folder"),
        ("tools.bench", ["scale", "--models=NoSuchRec"], "unknown model 'NoSuchRec'"),
    ],
)
def test_the_other_commands_end_bad_input_in_one_line(workdir, module, argv, expected, capsys, monkeypatch):
    """``python -m recbole_llmplugin.<data.amazon | tools.learning_curve | tools.bench>``: exit code 2 and one ``error:`` line."""
    import importlib

    if "--source=SHARED" in argv:  # a complete source folder: the output is what is wrong
        for name in (
            "amazon-games/Games-6k.item",
            "amazon-games/Games-6k.test.inter",
            "amazon-beauty/item_id_to_int.json",
            "amazon-beauty/products_lookup.csv",
            "amazon-beauty/user_sequence.txt",
        ):
            (workdir / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            (workdir / "src" / name).write_text("")
        argv = [f"--source={workdir / 'src'}" if a == "--source=SHARED" else a for a in argv]
    monkeypatch.setattr(sys, "argv", [module, *argv])
    code = importlib.import_module(f"recbole_llmplugin.{module}").main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and expected in lines[0], err[-2000:]
    assert "Traceback" not in err
