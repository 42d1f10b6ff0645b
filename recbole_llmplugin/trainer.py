"""RecBole Trainer for LLM models: checkpoints hold only the trained modules (safetensors) + config.

Saving a frozen LLM or CF backbone with every checkpoint would cost gigabytes per run; this trainer
writes ``<name>.safetensors`` (trainable parameters) beside RecBole's ``<name>.pth`` (config, epoch,
optimizer), and reloads both for ``evaluate(load_best_model=True)`` and resuming.
"""

import os
import time
from dataclasses import dataclass
from logging import getLogger

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import init_seed, set_color
from safetensors.torch import load_file, save_file

from recbole_llmplugin.files import atomic_write
from recbole_llmplugin.identity import artefact_digest


def weights_path(checkpoint_file):
    return os.path.splitext(checkpoint_file)[0] + ".safetensors"


def save_checkpoint(path, meta, weights):
    """Write ``weights`` (name -> tensor) as safetensors and ``meta`` with torch.save, each atomically."""
    weights = {name: tensor.detach().contiguous().cpu() for name, tensor in weights.items()}
    atomic_write(weights_path(path), lambda tmp: save_file(weights, tmp))
    meta = dict(meta, state_dict=None, weights_file=os.path.basename(weights_path(path)))
    atomic_write(path, lambda tmp: torch.save(meta, tmp, pickle_protocol=4))


def load_checkpoint(path, map_location="cpu"):
    """RecBole checkpoint dict; for plugin checkpoints ``weights`` holds the safetensors tensors."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    if checkpoint.get("weights_file"):
        checkpoint["weights"] = load_file(os.path.join(os.path.dirname(path), checkpoint["weights_file"]))
    return checkpoint


class LLMTrainer(Trainer):
    """RecBole's Trainer, optimising only parameters that require grad, with light checkpoints."""

    def _build_optimizer(self, **kwargs):
        params = [p for p in kwargs.pop("params", self.model.parameters()) if p.requires_grad]
        if not params:
            return None
        betas = self.config["adam_betas"]
        learner = self.config["learner"].lower()
        if betas and learner in ("adam", "adamw"):  # RecBole's builder has no betas: the official code uses (0.9, 0.98)
            optimizer = torch.optim.Adam if learner == "adam" else torch.optim.AdamW
            return optimizer(
                params,
                lr=kwargs.get("learning_rate", self.learning_rate),
                betas=tuple(betas),
                weight_decay=self.weight_decay,
            )
        return super()._build_optimizer(params=params, **kwargs)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if self.optimizer is None:
            getLogger().info(set_color(f"{self.config['model']} has no trainable parameters: no training", "yellow"))
            if saved:
                self._save_checkpoint(-1, verbose=verbose)
            return -1, None
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        meta = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
        }
        save_checkpoint(saved_model_file, meta, self.model.trainable_state_dict())
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _load_weights(self, checkpoint_file):
        checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
        self.model.load_trainable_state_dict(checkpoint["weights"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        return checkpoint

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = self._load_weights(resume_file)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if self.optimizer is not None and checkpoint.get("optimizer"):
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            self._load_weights(checkpoint_file)
            self.logger.info(f"Loading trained parameters from {checkpoint_file}")
        result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        if hasattr(self.model, "on_evaluation_end"):
            self.model.on_evaluation_end()
        return result


def stage_checkpoint(config, name):
    """``<checkpoint_dir>/<model>/<dataset>-<name>-<hash>.pth``, hashed by the one identity rule
    (``identity.artefact_digest``): same config (minus run-local keys), data and backbone -> same checkpoint."""
    key = artefact_digest(config)
    return os.path.join(config["checkpoint_dir"], config["model"].lower(), f"{config['dataset']}-{name}-{key}.pth")


@dataclass
class Stage:
    """One training stage of a multi-stage model."""

    name: str
    epochs: int
    learning_rate: float
    batch_size: int
    checkpoint: str  # reused when complete, resumed when not
    validate: bool = False  # evaluate on valid data each eval_step (early stopping) or not
    seed_offset: int = 0


class StagedTrainer(LLMTrainer):
    """Runs ``model.training_stages()`` in order inside RecBole's ``Trainer.fit`` loop.

    The multi-stage interface a model gives it (A-LLMRec, MLP-LLM, TALLRec):

    - ``training_stages()`` -> ``[Stage]``, in order;
    - ``set_stage(name)``: only that stage's modules require grad (``"eval"``: none);
    - ``<name>_loss(interaction)`` per stage (``stage1_loss``, ``stage2_loss``): a scalar, or a tuple of parts
      that RecBole sums and logs; ``calculate_loss`` stays RecBole's contract (the last stage's loss);
    - ``stage_train_loader(stage, train_data)``: the stage's training examples;
    - ``trainable_state_dict()`` / ``load_trainable_state_dict(weights)``: what stage checkpoints hold;
    - optionally ``save_adapter(folder)`` (TALLRec: a peft adapter folder).

    Each stage has its own epochs, learning rate, batch size (its own train loader from
    ``model.stage_train_loader``) and checkpoint file: a complete stage checkpoint is reused by later
    runs, an incomplete one is resumed. Every stage re-seeds before it starts, so a run that reuses a
    finished stage trains the next stage exactly as an uninterrupted run would.
    """

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self.stage_seconds = {}
        result = (-1, None)
        for stage in self.model.training_stages():
            start = time.time()
            result = self._fit_stage(stage, train_data, valid_data, verbose, show_progress, callback_fn)
            self.stage_seconds[f"{stage.name}_seconds"] = time.time() - start
            tokens = getattr(self.model, "token_stats", lambda: {})().get("prompt_tokens_per_example")
            if tokens and stage.name != "stage1":
                self.logger.info(f"{stage.name}: {tokens:.0f} prompt tokens per training example")
        return result

    def _reset_for(self, stage):
        self.model.set_stage(stage.name)
        self.epochs = stage.epochs
        self.eval_step = max(1, min(self.config["eval_step"], stage.epochs))
        self.start_epoch, self.cur_step = 0, 0
        self.best_valid_score = -np.inf if self.valid_metric_bigger else np.inf
        self.best_valid_result = None
        self.optimizer = self._build_optimizer(params=self.model.parameters(), learning_rate=stage.learning_rate)
        self.saved_model_file = stage.checkpoint
        self.stage_loss = getattr(self.model, f"{stage.name}_loss")  # the model's loss of this stage

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        return super()._train_epoch(
            train_data, epoch_idx, loss_func=loss_func or self.stage_loss, show_progress=show_progress
        )

    def _fit_stage(self, stage, train_data, valid_data, verbose, show_progress, callback_fn):
        init_seed(self.config["seed"] + stage.seed_offset, self.config["reproducibility"])
        self._reset_for(stage)
        if os.path.isfile(stage.checkpoint):
            checkpoint = load_checkpoint(stage.checkpoint, map_location=self.device)
            if checkpoint.get("stage_complete"):
                self.model.load_trainable_state_dict(checkpoint["weights"])
                self.logger.info(
                    set_color(f"{stage.name}: reusing finished checkpoint", "green") + f" {stage.checkpoint}"
                )
                return checkpoint["best_valid_score"], checkpoint.get("best_valid_result")
            self.resume_checkpoint(stage.checkpoint)
        loader = self.model.stage_train_loader(stage, train_data)
        self.logger.info(
            set_color(f"{stage.name}", "green")
            + f": {stage.epochs} epochs, lr {stage.learning_rate}, batch {stage.batch_size}, {len(loader.dataset)} examples"
        )
        result = Trainer.fit(
            self, loader, valid_data if stage.validate else None, verbose, True, show_progress, callback_fn
        )
        if stage.validate and os.path.isfile(stage.checkpoint):  # continue from the best epoch, not the last
            self._load_weights(stage.checkpoint)
        elif not os.path.isfile(stage.checkpoint):
            self._save_checkpoint(self.epochs - 1, verbose=verbose)
        checkpoint = load_checkpoint(stage.checkpoint)
        meta = {k: v for k, v in checkpoint.items() if k not in ("weights", "state_dict", "weights_file")}
        meta.update(stage_complete=True, best_valid_result=self.best_valid_result)
        save_checkpoint(stage.checkpoint, meta, checkpoint["weights"])
        if hasattr(self.model, "save_adapter"):  # e.g. TALLRec: also a peft adapter folder
            self.model.save_adapter(os.path.splitext(stage.checkpoint)[0] + "-adapter")
        return result
