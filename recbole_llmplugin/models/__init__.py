"""The package's plugin models, registered here: one ``register_model`` line per model."""

from recbole_llmplugin.models.allmrec import ALLMRec
from recbole_llmplugin.models.llm_only import LLMOnly
from recbole_llmplugin.models.mlp_llm import MLPLLM
from recbole_llmplugin.models.tallrec import TALLRec
from recbole_llmplugin.registry import register_model

register_model(ALLMRec)
register_model(LLMOnly)
register_model(MLPLLM)
register_model(TALLRec)
