"""The rule of which objective trains what an eval mode ranks by, and which model retrieves what an LLM model
re-ranks (the option values are the table's: ``config.properties.choices``)."""

from recbole_llmplugin.utils.errors import ConfigValueError

# option values only the models fed with CF tokens (A-LLMRec, MLP-LLM) take: generation and ranking by the CF match
CF_TOKEN_ONLY = {"eval_mode": ("generate", "match"), "stage2_objective": ("match",)}

# objectives that train what eval_mode index ranks by (the candidate labels; match: the mixture the labels follow)
INDEX_OBJECTIVES = ("index", "match")


def check_ranking(objective, eval_mode, token_space="projected", match_trained=False):
    """One ``ConfigValueError`` line when ``stage2_objective`` (None: the model trains no LLM stage) does not train
    what ``eval_mode`` ranks by, under ``allmrec_token_space`` (models without CF tokens: ``projected``);
    ``match_trained``: stage 2 trains the CF match (``stage2_objective: match`` or ``stage2_match_weight`` > 0)."""
    if objective is not None and "index" in (objective, eval_mode):
        if (eval_mode == "index") != (objective in INDEX_OBJECTIVES):
            raise ConfigValueError(
                f"stage2_objective: '{objective}' with eval_mode: '{eval_mode}'; the index objective trains the label "
                f"answers eval_mode index ranks by: set both to index, or neither"
            )
    if eval_mode == "match" and not match_trained:
        raise ConfigValueError(
            f"eval_mode: match ranks by the CF match <F_U(u), F_I(item)>, which stage2_objective '{objective}' does "
            f"not train: set stage2_objective: match or stage2_match_weight > 0"
        )
    if token_space != "vocabulary":
        if objective == "match":
            raise ConfigValueError(
                "stage2_objective: match trains the CF match that the vocabulary user token mixes the candidates by: "
                "set allmrec_token_space: vocabulary"
            )
    elif eval_mode not in ("index", "match"):
        raise ConfigValueError(
            f"allmrec_token_space: vocabulary ranks by the candidate labels the LLM copies: set eval_mode to index (or "
            f"match: the CF match alone) and stage2_objective to index or match (got eval_mode {eval_mode})"
        )


def retriever_name(config):
    """The RecBole model whose top items an LLM model re-ranks under full ranking (``rerank_retriever``; backbone:
    the model's ``cf_model``, SASRec for a model without one)."""
    name = config["rerank_retriever"]
    return (config["cf_model"] or "SASRec") if name == "backbone" else name
