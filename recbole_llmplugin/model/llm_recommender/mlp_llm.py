"""MLPLLM: the MLP-LLM ablation of A-LLMRec (Kim et al., KDD 2024, arXiv 2404.11343, Sec. 4).

The frozen CF backbone's user representation and item embeddings are projected by MLPs straight
into the LLM's token space -- no stage-1 alignment with item text -- and the projections are trained
like A-LLMRec's stage 2 (next-item title generation, same examples and candidates).
"""

from recbole_llmplugin.model.cf_token_recommender import CFTokenRecommender


class MLPLLM(CFTokenRecommender):
    """MLP-LLM ablation (A-LLMRec paper, Sec. 4; reference code: https://github.com/ghdtjr/A-LLMRec).

    NOTE: A-LLMRec's stage 2 (``CFTokenRecommender``) on the raw CF item embeddings: the same F_U / F_I shapes
    (``allmrec_architecture``), options and differences from the paper as ALLMRec.
    """
