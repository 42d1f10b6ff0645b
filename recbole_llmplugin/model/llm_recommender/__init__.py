"""The package's plugin models, registered here: one ``register_model`` line per model."""

from recbole_llmplugin.model.llm_recommender.allmrec import ALLMRec
from recbole_llmplugin.model.llm_recommender.llm_only import LLMOnly
from recbole_llmplugin.model.llm_recommender.mlp_llm import MLPLLM
from recbole_llmplugin.model.llm_recommender.tallrec import TALLRec
from recbole_llmplugin.utils.registry import register_model

register_model(ALLMRec)
register_model(LLMOnly)
register_model(MLPLLM)
register_model(TALLRec)
