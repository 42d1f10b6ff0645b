"""Plugin models; importing a model module registers it (``@register_model``)."""

from recbole_llmplugin.models.allmrec import ALLMRec  # noqa: F401
from recbole_llmplugin.models.llm_only import LLMOnly  # noqa: F401
from recbole_llmplugin.models.mlp_llm import MLPLLM  # noqa: F401
from recbole_llmplugin.models.tallrec import TALLRec  # noqa: F401
