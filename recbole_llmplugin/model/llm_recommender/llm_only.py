"""LLMOnly: the LLM-Only baseline of A-LLMRec (Kim et al., KDD 2024, arXiv 2404.11343).

A frozen LLM ranks the evaluator's candidates from a text prompt -- the user's last
``prompt_history_len`` item titles and the candidate titles -- by the length-normalised
log-likelihood of each candidate's title as the answer. Nothing is trained.
"""

from recbole_llmplugin.utils.errors import ConfigValueError
from recbole_llmplugin.model.abstract_llm_recommender import LLMRecommender


class LLMOnly(LLMRecommender):
    """LLM-Only baseline (A-LLMRec paper, Sec. 4; reference code: https://github.com/ghdtjr/A-LLMRec).

    NOTE: the paper generates a title and counts hit@1; here candidates are ranked by answer likelihood
    (``eval_mode: score``) or label logits (``index``) so RecBole's evaluator reports every metric.
    """

    trains_stage2 = False

    def calculate_loss(self, interaction):
        raise ConfigValueError("LLMOnly is not trained; it has no loss")
