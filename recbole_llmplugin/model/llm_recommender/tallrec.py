"""TALLRec: LoRA fine-tuning of the LLM on text-only recommendation prompts (Bao et al., RecSys 2023),
the LoRA baseline of A-LLMRec (Kim et al., KDD 2024, arXiv 2404.11343).

The prompt shows the history titles and the candidate titles (no CF knowledge). LoRA adapters (peft)
are trained on the same examples and candidate construction as A-LLMRec's stage 2 (next-item title
generation) and ranked by the same candidate scorer. The adapter is saved as a peft folder beside the
checkpoint.
"""

import warnings

from recbole_llmplugin.utils.errors import ConfigValueError
from recbole_llmplugin.model.abstract_llm_recommender import LLMRecommender


def lora_targets(llm, configured):
    """Configured target modules, else peft's default for the architecture, else every linear layer."""
    if configured:
        return configured
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    return TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(llm.config.model_type, "all-linear")


class TALLRec(LLMRecommender):
    """TALLRec (Bao et al., RecSys 2023, arXiv 2305.00447; reference code: https://github.com/SAI990323/TALLRec).

    NOTE: TALLRec tunes LoRA on yes/no questions about one item; as A-LLMRec's baseline it is trained here on the
    same prompts and objective as A-LLMRec's stage 2 (``stage2_objective``), with no CF tokens, so the two
    differ only in what is trained.
    """

    trainer_type = "staged"
    trains_llm_layers = True  # LoRA layers inside the LLM train (dropout on in train mode)

    @classmethod
    def check_config(cls, config, n_items=None):
        super().check_config(config, n_items)
        if config["llm_quantization"] not in (None, "none"):
            raise ConfigValueError("TALLRec trains LoRA on a float LLM here; set llm_quantization: none")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config["lora_r"],
            lora_alpha=config["lora_alpha"],
            lora_dropout=config["lora_dropout"],
            target_modules=lora_targets(self.llm, config["lora_target_modules"]),
            bias="none",
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():
            # peft reads the LLM's is_gradient_checkpointing, which transformers deprecates for another name
            warnings.filterwarnings(
                "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
            )
            self.llm = get_peft_model(self.llm, lora)
        self.scorer.llm = self.llm
        self.set_stage("eval")

    def train(self, mode=True):
        """Unlike the frozen-LLM models, the LLM carries trained LoRA layers: let them train (dropout); an
        int8 evaluation copy made before is stale once they train."""
        if mode:
            self._eval_llm = None
        return super().train(mode)

    def set_stage(self, stage):
        for name, param in self.llm.named_parameters():
            param.requires_grad_(stage == "stage2" and "lora_" in name)

    def trainable_state_dict(self):
        return {name: p for name, p in self.named_parameters() if "lora_" in name}

    def training_stages(self):
        return [self.stage2("lora")]

    def save_adapter(self, folder):
        """The LoRA adapter as a peft folder (``PeftModel.from_pretrained`` reads it)."""
        self.llm.save_pretrained(folder)
