"""RecBole Trainer for LLM models: checkpoints hold only the trained modules, in one safetensors file.

Saving a frozen LLM or CF backbone with every checkpoint would cost gigabytes per run; this trainer writes the
trainable parameters, the optimizer state and JSON metadata (``checkpoints``: no pickle) and reloads them for
``evaluate(load_best_model=True)``. The staged trainer resumes an interrupted stage exactly: at every epoch
boundary it writes a resume state (weights, optimizer, every RNG) and claims the stage with a lock (``locks``).
"""

import os
import time
from dataclasses import dataclass
from logging import getLogger

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import init_seed, set_color

from recbole_llmplugin.checkpoints import (
    config_overrides,
    load_checkpoint,
    load_plugin_checkpoint,
    optimizer_parts,
    restore_rng,
    rng_parts,
    save_plugin_checkpoint,
)
from recbole_llmplugin.identity import artefact_digest
from recbole_llmplugin.locks import claim


def unique_checkpoint_name(path, suffix):
    """RecBole names checkpoints to the second (``<Model>-<date>.pth``): two runs started in the same second
    would write one file. The plugin adds the process id."""
    return f"{os.path.splitext(path)[0]}-{os.getpid()}{suffix}"


class LLMTrainer(Trainer):
    """RecBole's Trainer, optimising only parameters that require grad, with light checkpoints."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.saved_model_file = unique_checkpoint_name(self.saved_model_file, ".safetensors")

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
        meta, tensors = self._training_state(epoch)
        save_plugin_checkpoint(saved_model_file, meta, self.model.trainable_state_dict(), tensors)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _training_state(self, epoch):
        """(JSON-able meta, optimizer tensors) of the training state after ``epoch``."""
        tensors, optimizer_meta = optimizer_parts(self.optimizer) if self.optimizer is not None else ({}, None)
        meta = {
            "model": self.config["model"],
            "dataset": self.config["dataset"],
            "config_overrides": config_overrides(self.config),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "optimizer_meta": optimizer_meta,
        }
        return meta, tensors

    def _load_weights(self, checkpoint_file):
        checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
        self.model.load_trainable_state_dict(checkpoint["weights"])
        return checkpoint

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
    """``<checkpoint_dir>/<model>/<dataset>-<name>-<hash>.safetensors``, hashed by the one identity rule
    (``identity.artefact_digest``): same config (minus run-local keys), data and backbone -> same checkpoint."""
    key = artefact_digest(config)
    return os.path.join(
        config["checkpoint_dir"], config["model"].lower(), f"{config['dataset']}-{name}-{key}.safetensors"
    )


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
        self.stage_name = stage.name
        self._resumed_rng = None

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self._resumed_rng is not None:  # the RNG state of the interrupted run at this epoch boundary
            restore_rng(*self._resumed_rng, loader=train_data)
            self._resumed_rng = None
        elif epoch_idx > 0:  # the previous epoch (and its validation) is done: its state resumes exactly
            self._save_resume_state(epoch_idx, train_data)
        return super()._train_epoch(
            train_data, epoch_idx, loss_func=loss_func or self.stage_loss, show_progress=show_progress
        )

    def _save_resume_state(self, epoch_idx, loader):
        meta, tensors = self._training_state(epoch_idx)
        rng_tensors, rng_meta = rng_parts(loader)
        meta.update(rng=rng_meta, best_valid_result=self.best_valid_result)
        save_plugin_checkpoint(
            resume_path(self.saved_model_file), meta, self.model.trainable_state_dict(), {**tensors, **rng_tensors}
        )

    def _resume(self, path):
        """Continue a stage from its resume state: weights, optimizer, counters and RNGs of that epoch boundary."""
        meta, tensors = load_plugin_checkpoint(path, map_location=self.device)
        self.model.load_trainable_state_dict(meta["weights"])
        self.optimizer.load_state_dict(meta["optimizer"])
        self.start_epoch, self.cur_step = meta["epoch"], meta["cur_step"]
        self.best_valid_score, self.best_valid_result = meta["best_valid_score"], meta.get("best_valid_result")
        self._resumed_rng = (tensors, meta["rng"])
        self.logger.info(set_color(f"resuming {path}", "green") + f": from epoch {self.start_epoch}")

    def _fit_stage(self, stage, train_data, valid_data, verbose, show_progress, callback_fn):
        with claim(stage.checkpoint, f"{stage.name} ({os.path.basename(stage.checkpoint)})"):
            return self._fit_claimed_stage(stage, train_data, valid_data, verbose, show_progress, callback_fn)

    def _fit_claimed_stage(self, stage, train_data, valid_data, verbose, show_progress, callback_fn):
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
        if os.path.isfile(resume_path(stage.checkpoint)):
            self._resume(resume_path(stage.checkpoint))
        # else: interrupted before the first epoch boundary (or never started): the stage starts over
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
        meta, tensors = load_plugin_checkpoint(stage.checkpoint)
        weights = meta.pop("weights")
        meta.pop("optimizer", None)
        meta.update(stage_complete=True, best_valid_result=self.best_valid_result)
        save_plugin_checkpoint(
            stage.checkpoint, meta, weights, {k: v for k, v in tensors.items() if not k.startswith("weights.")}
        )
        if os.path.isfile(resume_path(stage.checkpoint)):
            os.remove(resume_path(stage.checkpoint))
        if hasattr(self.model, "save_adapter"):  # e.g. TALLRec: also a peft adapter folder
            self.model.save_adapter(os.path.splitext(stage.checkpoint)[0] + "-adapter")
        return result


def resume_path(checkpoint):
    """The resume state beside a stage checkpoint (removed when the stage completes)."""
    return os.path.splitext(checkpoint)[0] + ".resume.safetensors"
