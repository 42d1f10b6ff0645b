"""The values of the plugin's option properties, and the rule of which objective trains what an eval mode ranks by.

One table: the models, the property checks (``config.validation``) and ``docs/allmrec.md`` (checked by a test) read
their option values from here.
"""

from recbole_llmplugin.utils.errors import ConfigValueError

OPTIONS = {
    "stage2_objective": ("generate", "rank", "both", "index", "match"),  # what stage 2 trains
    "eval_mode": ("score", "index", "generate", "match"),  # how predict() ranks a user's candidates
    "allmrec_token_space": ("projected", "vocabulary"),  # where the CF tokens live in the LLM's input
    "allmrec_architecture": ("official", "paper"),  # shapes of the stage-1 autoencoders and F_U / F_I
    "joint_embedding": ("cf", "text"),  # which stage-1 encoder gives the item tokens
    "cross_domain_user": ("text", "none"),  # a target user's CF representation: from its history's text, or none
    "text_encoder_trainable": ("none", "last_layer", "all"),  # what of the sentence encoder trains in stage 1
    "eval_candidates": ("recbole", "fixed"),  # RecBole's own draws, or one fixed file for every model
    "llm_dtype": ("auto", "float32", "bfloat16", "float16"),
    "llm_quantization": ("none", "8bit", "4bit"),
    "llm_eval_quantization": ("none", "int8"),
    "llm_score_method": ("packed", "cache"),
    "llm_device_map": ("none", "auto", "balanced", "balanced_low_0", "sequential"),  # accelerate's device maps
    "unisrec_mode": ("inductive", "transductive"),  # UniSRec's items: their text alone, or text + an ID embedding
}

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
