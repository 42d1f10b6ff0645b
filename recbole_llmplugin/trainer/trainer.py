"""RecBole Trainer for LLM models: checkpoints hold only the trained modules, in one safetensors file.

Saving a frozen LLM or CF backbone with every checkpoint would cost gigabytes per run; this trainer writes the
trainable parameters, the optimizer state and JSON metadata (``checkpoints``: no pickle) and reloads them for
``evaluate(load_best_model=True)``. The staged trainer resumes an interrupted stage exactly: at every epoch
boundary it writes a resume state (weights, optimizer, every RNG) and claims the stage with a lock (``locks``).
"""

import contextlib
import os
import time
from logging import getLogger

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.trainer import Trainer
from recbole.utils import EvaluatorType, init_seed, set_color
from tqdm import tqdm

from recbole_llmplugin.utils.checkpoints import (
    config_overrides,
    load_checkpoint,
    load_plugin_checkpoint,
    optimizer_parts,
    restore_rng,
    rng_parts,
    save_plugin_checkpoint,
)
from recbole_llmplugin.utils import distributed
from recbole_llmplugin.utils.distributed import barrier, data_parallel, is_distributed, is_main, single_process_view
from recbole_llmplugin.utils.compat import recbole_warnings_quiet, tensorboard_on_main_only
from recbole_llmplugin.utils.errors import ConfigValueError, UnreadableFileError
from recbole_llmplugin.utils.files import set_aside
from recbole_llmplugin.config.identity import artefact_digest
from recbole_llmplugin.trainer.locks import claim


def unique_checkpoint_name(path, suffix):
    """RecBole names checkpoints to the second (``<Model>-<date>.pth``): two runs started in the same second
    would write one file. The plugin adds the process id: the main process's name in every process of a
    data-parallel run (the main one writes the file, the others read it)."""
    return distributed.main_value(f"{os.path.splitext(path)[0]}-{os.getpid()}{suffix}")


class LLMTrainer(Trainer):
    """RecBole's Trainer, optimising only parameters that require grad, with light checkpoints.

    Data-parallel (RecBole's ``nproc`` launch, ``distributed``): DDP wraps only the parameters being trained
    (``wrap_trained``), every process reads the same batches and trains its share of their rows
    (``shared_loss``), evaluation is sharded by batches and gathered (``_evaluate_shared``), and only the main
    process writes. ``llm_micro_batch_size`` splits each process's share into micro-batches whose gradients add up to
    the batch's (accumulation), in one process too.
    """

    def __init__(self, config, model):
        # no DDP over the whole model (the frozen LLM): see wrap_trained; a TensorBoard log from the main process only
        with single_process_view(config), tensorboard_on_main_only(), recbole_warnings_quiet():
            super().__init__(config, model)
        self.saved_model_file = unique_checkpoint_name(self.saved_model_file, ".safetensors")
        self.micro_batch_size = config["llm_micro_batch_size"]
        if self.micro_batch_size and self.enable_scaler:
            raise ConfigValueError(
                "llm_micro_batch_size with enable_scaler (fp16 loss scaling) is not supported; unset one"
            )
        self.stage_name = "stage2"  # calculate_loss is the LLM stage's loss
        self._zero_loss = torch.zeros((), device=self.device)
        self.wrap_trained()

    def wrap_trained(self):
        """DDP over the parameters that require grad now (a stage's modules; a new wrapper per stage)."""
        self.distributed_model = data_parallel((p for p in self.model.parameters() if p.requires_grad), self.device)

    def set_reduce_hook(self):
        """RecBole runs the DDP forward before each batch's loss; ``shared_loss`` runs it itself, before the last
        micro-batch only (the others accumulate gradients without a sync)."""

    def sync_grad_loss(self):
        """0 x every wrapped parameter, so each one gets a gradient and DDP's sync completes (RecBole's device)."""
        if self.distributed_model is None:
            return 0
        return sum(p.sum() for p in self.distributed_model.module.params) * 0.0

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        loss_func = self.shared_loss(loss_func or self.model.calculate_loss)
        with recbole_warnings_quiet():
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    def shared_loss(self, loss_func):
        """``loss_func`` over this process's share of each batch, in micro-batches of ``llm_micro_batch_size`` rows
        (the earlier ones backpropagated here, without a gradient sync); returns the last micro-batch's loss plus the
        others' values (detached). Each part is weighted by its share of the batch (rows, or answer tokens for
        token-mean losses: ``model.training_batch``), so processes and micro-batches together give the gradient of
        the whole batch's loss. The model makes the batch's random draws first (``training_batch``), the same in every
        process."""

        def loss(interaction):
            self._time_first_batch(len(interaction))
            interaction, weights, lengths = self.model.training_batch(self.stage_name, interaction)
            if distributed.world_size() == 1 and not self.micro_batch_size:
                return loss_func(interaction)
            n = len(interaction)
            weights = torch.ones(n, device=self.device) if weights is None else weights.float()
            rows = distributed.share_rows(n, lengths, device=self.device)
            parts = list(torch.split(rows, self.micro_batch_size or max(len(rows), 1))) or [rows]
            earlier, wrapped = None, self.distributed_model is not None
            for index, part in enumerate(parts):
                last = index == len(parts) - 1
                with contextlib.nullcontext() if last or not wrapped else self.distributed_model.no_sync():
                    if last and wrapped:
                        self.distributed_model(torch.zeros(1, device=self.device))  # this backward syncs
                    if len(part) == 0:  # a batch smaller than the process count: this share is empty
                        result = _scaled(self._zero_loss, 0.0)  # zeros shaped like the loss: RecBole logs its parts
                    else:
                        share = distributed.world_size() * float(weights[part].sum() / weights.sum())
                        result = _scaled(loss_func(interaction[part]), share)
                        self._zero_loss = _detached(result)
                    if not last:
                        self.model.total_loss(result).backward()
                        earlier = _detached(result) if earlier is None else _added(earlier, _detached(result))
            return result if earlier is None else _added(result, earlier)

        return loss

    def _time_first_batch(self, rows):
        """The plan's cost, measured: when a stage's second batch starts, log the first batch's seconds per example
        (forward, backward and step) and the time the whole stage would take at that rate."""
        plan = getattr(self, "_plan", None)
        if plan is None:
            return
        if plan["start"] is None:
            plan.update(start=time.time(), rows=rows)
            return
        per_example = (time.time() - plan["start"]) / max(plan["rows"], 1)
        total = per_example * plan["examples"] * max(self.epochs - self.start_epoch, 1)
        self.logger.info(
            f"{self.stage_name}: first batch {per_example:.3f} s per example -> about {duration(total)} for "
            f"{self.epochs - self.start_epoch} epoch(s) of {plan['examples']} examples"
        )
        self._plan = None

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

    def collect_training_data(self, train_data):
        """RecBole's evaluator reads the training data's item counts (popularity metrics: AveragePopularity,
        TailPercentage...) from the loader ``fit`` starts with. A plugin model trains on other loaders (a stage's
        last positions) or not at all (reused stages, LLMOnly): collect from the run's whole train loader, as for a
        RecBole model, and keep that."""
        self.eval_collector.data_collect(train_data)
        self.eval_collector.data_collect = lambda loader: None  # a stage's loader does not replace it

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self.collect_training_data(train_data)
        if self.optimizer is None:
            getLogger().info(set_color(f"{self.config['model']} has no trainable parameters: no training", "yellow"))
            if saved:
                self._save_checkpoint(-1, verbose=verbose)
            return -1, None
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not is_main():  # one writer; the others read the file after a barrier
            return
        saved_model_file = kwargs.pop("saved_model_file", self.model_file())
        meta, tensors = self._training_state(epoch)
        save_plugin_checkpoint(saved_model_file, meta, self.model.trainable_state_dict(), tensors)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def model_file(self):
        """The checkpoint this trainer writes and evaluates: RecBole's ``saved_model_file`` (made unique)."""
        return self.saved_model_file

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
            barrier()  # the main process has written it
            checkpoint_file = model_file or self.model_file()
            self._load_weights(checkpoint_file)
            self.logger.info(f"Loading trained parameters from {checkpoint_file}")
        if is_distributed():
            result = self._evaluate_shared(eval_data, show_progress)
        else:
            result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        if hasattr(self.model, "on_evaluation_end"):
            self.model.on_evaluation_end()
        return result

    @torch.no_grad()
    def _evaluate_shared(self, eval_data, show_progress=False):
        """RecBole's evaluation loop, each process scoring a contiguous block of the batches (of whole users); the
        collected per-user results are gathered in batch order and every process computes the metrics on all users,
        as one process would (RecBole's own reduction averages per-process metrics, weighted by batch counts)."""
        if not eval_data:
            return None
        self.model.eval()
        full = isinstance(eval_data, FullSortEvalDataLoader)
        eval_func = self._full_sort_batch_eval if full else self._neg_sample_batch_eval
        if full and self.item_tensor is None:
            self.item_tensor = eval_data._dataset.get_item_feature().to(self.device)
        if self.config["eval_type"] == EvaluatorType.RANKING:
            self.tot_item_num = eval_data._dataset.item_num
        start, stop = distributed.batch_range(len(eval_data))
        progress = tqdm(total=stop - start, ncols=100, desc=set_color("Evaluate   ", "pink")) if show_progress else None
        for index, batched_data in enumerate(eval_data):
            if index >= stop:
                break
            if index >= start:
                interaction, scores, positive_u, positive_i = eval_func(batched_data)
                self.eval_collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
                if progress is not None:
                    progress.update()
        if progress is not None:
            progress.close()
        self.eval_collector.model_collect(self.model)
        return self.evaluator.evaluate(distributed.gather_struct(self.eval_collector.get_data_struct()))


def _scaled(loss, weight):
    return tuple(part * weight for part in loss) if isinstance(loss, tuple) else loss * weight


def _detached(loss):
    return tuple(part.detach() for part in loss) if isinstance(loss, tuple) else loss.detach()


def _added(loss, other):
    return tuple(a + b for a, b in zip(loss, other)) if isinstance(loss, tuple) else loss + other


def stage_checkpoint(config, name):
    """``<checkpoint_dir>/<model>/<dataset>-<name>-<hash>.safetensors``, hashed by the one identity rule
    (``config.identity.artefact_digest``): same config (minus run-local keys), data and backbone -> same checkpoint."""
    key = artefact_digest(config)
    return os.path.join(
        config["checkpoint_dir"], config["model"].lower(), f"{config['dataset']}-{name}-{key}.safetensors"
    )


def stage_checkpoints(config, model):
    """{stage name: its checkpoint file} of ``model``'s declared stages (``stage_checkpoint``), in order."""
    return {stage.name: stage_checkpoint(config, stage.checkpoint_name) for stage in model.training_stages()}


class StagedTrainer(LLMTrainer):
    """Runs ``model.training_stages()`` in order inside RecBole's ``Trainer.fit`` loop.

    The multi-stage interface a model gives it (A-LLMRec, MLP-LLM, TALLRec):

    - ``training_stages()`` -> ``[model.stage.Stage]``, in order (the trainer names each one's checkpoint:
      ``stage_checkpoint``; ``stage_checkpoints`` tells the runner where each went);
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

    def __init__(self, config, model):
        super().__init__(config, model)
        self.stage_checkpoints = stage_checkpoints(config, model)  # where each stage's checkpoint goes

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self.collect_training_data(train_data)
        self.stage_seconds = {}
        result = (-1, None)
        for stage in self.model.training_stages():
            start = time.time()
            result = self._fit_stage(stage, train_data, valid_data, verbose, show_progress, callback_fn)
            self.stage_seconds[f"{stage.name}_seconds"] = time.time() - start
            self.stage_seconds[f"{stage.name}_epochs"] = stage.epochs
            tokens = getattr(self.model, "token_stats", lambda: {})().get("prompt_tokens_per_example")
            if tokens and stage.name != "stage1":
                self.logger.info(f"{stage.name}: {tokens:.0f} prompt tokens per training example")
        return result

    def _reset_for(self, stage):
        self.model.set_stage(stage.name)
        self.wrap_trained()  # before the optimizer: DDP broadcasts the main process's weights
        self.epochs = stage.epochs
        self.eval_step = max(1, min(self.config["eval_step"], stage.epochs))
        self.start_epoch, self.cur_step = 0, 0
        self.best_valid_score = -np.inf if self.valid_metric_bigger else np.inf
        self.best_valid_result = None
        self.optimizer = self._build_optimizer(params=self.model.parameters(), learning_rate=stage.learning_rate)
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
        if not is_main():
            return
        meta, tensors = self._training_state(epoch_idx)
        rng_tensors, rng_meta = rng_parts(loader)
        meta.update(rng=rng_meta, best_valid_result=self.best_valid_result)
        save_plugin_checkpoint(
            resume_path(self.model_file()), meta, self.model.trainable_state_dict(), {**tensors, **rng_tensors}
        )

    def _read_kept(self, path, what, read=None):
        """A kept stage checkpoint (``read(path)``; default its meta), or None when there is none or it is
        unreadable (then it is moved aside and made anew)."""
        if not os.path.isfile(path):
            return None
        try:
            return (read or (lambda p: load_checkpoint(p, map_location=self.device)))(path)
        except UnreadableFileError as error:
            if is_main():  # the other processes of a data-parallel run start the stage over with it
                set_aside(path, what, error.reason)
            return None

    def _resume(self, path):
        """Continue a stage from its resume state: weights, optimizer, counters and RNGs of that epoch boundary
        (an unreadable one is moved aside: the stage starts over)."""
        state = self._read_kept(path, "resume state", lambda p: load_plugin_checkpoint(p, map_location=self.device))
        if state is None:
            return
        meta, tensors = state
        self.model.load_trainable_state_dict(meta["weights"])
        self.optimizer.load_state_dict(meta["optimizer"])
        self.start_epoch, self.cur_step = meta["epoch"], meta["cur_step"]
        self.best_valid_score, self.best_valid_result = meta["best_valid_score"], meta.get("best_valid_result")
        self._resumed_rng = (tensors, meta["rng"])
        self.logger.info(set_color(f"resuming {path}", "green") + f": from epoch {self.start_epoch}")

    def model_file(self):
        """The checkpoint being trained, and then evaluated: the stage's (the last stage's after ``fit``)."""
        return self.stage_checkpoints[self.stage_name]

    def _fit_stage(self, stage, train_data, valid_data, verbose, show_progress, callback_fn):
        path = self.stage_checkpoints[stage.name]
        what = f"{stage.name} ({os.path.basename(path)})"
        timeout = self.config["lock_timeout"]
        with claim(path, what, timeout) if is_main() else contextlib.nullcontext():  # the main one claims for all
            barrier()  # the others wait for the claim, then see the files the main process sees
            return self._fit_claimed_stage(stage, train_data, valid_data, verbose, show_progress, callback_fn)

    def _fit_claimed_stage(self, stage, train_data, valid_data, verbose, show_progress, callback_fn):
        init_seed(self.config["seed"] + stage.seed_offset, self.config["reproducibility"])
        self._reset_for(stage)
        path = self.stage_checkpoints[stage.name]
        kept = os.path.isfile(path)
        checkpoint = self._read_kept(path, f"{stage.name} checkpoint")
        if kept and checkpoint is None and os.path.isfile(resume_path(path)) and is_main():
            os.remove(resume_path(path))  # its best epoch's weights are gone: the stage starts over
        if checkpoint is not None:
            if checkpoint.get("stage_complete"):
                self.model.load_trainable_state_dict(checkpoint["weights"])
                self.logger.info(set_color(f"{stage.name}: reusing finished checkpoint", "green") + f" {path}")
                return checkpoint["best_valid_score"], checkpoint.get("best_valid_result")
        if os.path.isfile(resume_path(path)):
            self._resume(resume_path(path))
        # else: interrupted before the first epoch boundary (or never started): the stage starts over
        loader = self.model.stage_train_loader(stage, train_data)
        self.logger.info(
            set_color(f"{stage.name}", "green")
            + f": {stage.epochs} epochs, lr {stage.learning_rate}, batch {stage.batch_size}, {len(loader.dataset)} examples"
        )
        self._plan = {"start": None, "examples": len(loader.dataset)}
        result = Trainer.fit(
            self, loader, valid_data if stage.validate else None, verbose, True, show_progress, callback_fn
        )
        self._plan = None
        barrier()  # the main process has written the stage's checkpoint
        if stage.validate and os.path.isfile(path):  # continue from the best epoch, not the last
            self._load_weights(path)
        elif not os.path.isfile(path):
            self._save_checkpoint(self.epochs - 1, verbose=verbose)
        if is_main():
            self._complete(stage)
        barrier()
        return result

    def _complete(self, stage):
        """Mark the stage's checkpoint complete (reused by later runs), drop its resume state, save an adapter."""
        path = self.stage_checkpoints[stage.name]
        meta, tensors = load_plugin_checkpoint(path)
        weights = meta.pop("weights")
        meta.pop("optimizer", None)
        meta.update(stage_complete=True, best_valid_result=self.best_valid_result)
        save_plugin_checkpoint(path, meta, weights, {k: v for k, v in tensors.items() if not k.startswith("weights.")})
        if os.path.isfile(resume_path(path)):
            os.remove(resume_path(path))
        if hasattr(self.model, "save_adapter"):  # e.g. TALLRec: also a peft adapter folder
            self.model.save_adapter(os.path.splitext(path)[0] + "-adapter")


def duration(seconds):
    """``2 h 05 min``, ``3 min 20 s`` or ``12 s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def resume_path(checkpoint):
    """The resume state beside a stage checkpoint (removed when the stage completes)."""
    return os.path.splitext(checkpoint)[0] + ".resume.safetensors"


# the trainer of each plugin model, by the ``trainer_type`` it declares (RecBole's ``get_trainer`` picks by model type)
TRAINERS = {"llm": LLMTrainer, "staged": StagedTrainer}


def get_trainer_class(model_class):
    """The plugin trainer of a model that declares ``trainer_type``; None for a model RecBole's trainer runs."""
    trainer_type = getattr(model_class, "trainer_type", None)
    return None if trainer_type is None else TRAINERS[trainer_type]
