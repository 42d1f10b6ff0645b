"""The package's sequential baselines over item text (no LLM), registered here: one ``register_model`` line each."""

from recbole_llmplugin.model.sequential_recommender.unisrec import UniSRec
from recbole_llmplugin.utils.registry import register_model

register_model(UniSRec)
