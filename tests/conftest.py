"""Shared fixtures: tiny random models built in-process (nothing downloaded) and a temp work dir."""

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import recbole_llmplugin  # noqa: E402,F401  (applies the compat fixes before RecBole is used)
from dataset.make_fixtures import NAME as TINY_DATASET  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"


def _corpus():
    from dataset.make_fixtures import WORDS

    item_file = REPO / "dataset" / TINY_DATASET / f"{TINY_DATASET}.item"
    lines = item_file.read_text(encoding="utf-8").splitlines()
    sentences = [
        "A user interacted with these items, oldest first: . Which one of these items will the user choose next: ? Answer: ",
        "A user watched these movies, oldest first. Which one of these movies will the user watch next? Answer:",
    ]
    return sentences + lines + [" ".join(WORDS)] * 5


def build_tiny_llm(folder, hidden=32, layers=2, seed=0, corpus=None):
    """A random LlamaForCausalLM with a byte-level BPE tokenizer trained on the fixture text (or ``corpus``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus or _corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def build_tiny_sentence_encoder(folder, dim=24):
    """A random BERT + mean pooling as a sentence-transformers folder."""
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        _corpus(),
        trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(0)
    bert_dir = Path(folder) / "bert"
    BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=dim,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=2 * dim,
        )
    ).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    try:  # sentence-transformers 6 moved its modules (the old path warns)
        from sentence_transformers.base.modules import Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    transformer = Transformer(str(bert_dir), max_seq_length=64)
    dimension = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    pooling = Pooling(dimension(), pooling_mode="mean")
    encoder = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    encoder.save(str(Path(folder) / "st"))
    return str(Path(folder) / "st")


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory):
    return build_tiny_sentence_encoder(tmp_path_factory.mktemp("tiny_encoder"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a temp folder: RecBole writes ./log, ./log_tensorboard and ./saved."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_config(tiny_llm):
    """Properties for fast runs on the synthetic fixture dataset."""
    return {
        "data_path": str(REPO / "dataset"),
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "llm_path": tiny_llm,
        "item_text_template": "{title}",
        "item_text_max_tokens": 12,
        "MAX_ITEM_LIST_LENGTH": 20,
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "uni9"},
        "train_neg_sample_args": None,
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [1, 5],
        "valid_metric": "NDCG@5",
        "epochs": 1,
        "show_progress": False,
        "eval_batch_size": 50,
        "llm_eval_user_batch": 3,
        "llm_score_row_chunk": 7,
        "reproducibility": True,
        "state": "WARNING",
    }


BACKBONE_PROPS = {"hidden_size": 16, "inner_size": 32, "embedding_size": 16, "n_layers": 1, "n_heads": 1, "epochs": 1}


def train_backbone(tiny_config, folder, model="SASRec", **extra):
    extra_props = (
        {"loss_type": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}
        if model == "BERT4Rec"
        else {}
    )
    props = {**tiny_config, **BACKBONE_PROPS, **extra_props, **extra, "checkpoint_dir": str(folder)}
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        from recbole_llmplugin import run_recbole_llm

        return run_recbole_llm(model, TINY_DATASET, config_dict=props)["saved_model_file"]
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="session")
def backbone(tmp_path_factory, tiny_llm):
    config = {
        "data_path": str(REPO / "dataset"),
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 20,
        "train_neg_sample_args": None,
        "show_progress": False,
        "state": "WARNING",
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "uni9"},
    }
    return train_backbone(config, tmp_path_factory.mktemp("backbone"))


@pytest.fixture
def allmrec_config(tiny_config, tiny_encoder, backbone):
    return {
        **tiny_config,
        "cf_checkpoint": backbone,
        "text_encoder": tiny_encoder,
        "stage1_embedding_size": 8,
        "stage1_hidden_size": 16,
        "projection_hidden_size": 16,
        "stage1_epochs": 2,
        "stage2_epochs": 1,
        "stage1_batch_size": 16,
        "stage2_batch_size": 8,
        "stage2_candidates": 5,
        "eval_candidates": "fixed",
    }


def pytest_configure(config):
    config.addinivalue_line("markers", "real_models: end-to-end test with the real default LLM / encoder")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def assert_measured(result, metrics=("hit@1",)):
    """A result's figures are exactly the per-user values it keeps: each metric is their mean and its standard
    error their sample std / sqrt(n), over the n test users (no bound that any figure would pass)."""
    import math

    import numpy as np

    values = result["test_user_values"]
    n = len(values["users"])
    assert n == result["costs"]["test_users"]
    for metric in metrics:
        column = np.asarray(values[metric], dtype=float)
        assert result["test_result"][metric] == pytest.approx(column.mean(), abs=1e-4)
        assert result["test_se"][metric] == pytest.approx(column.std(ddof=1) / math.sqrt(n), abs=1e-6)
