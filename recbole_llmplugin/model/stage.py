"""A training stage, as a model declares it (``training_stages()``): what the trainer runs, and nothing about
where its checkpoint goes (the trainer names and keeps it: ``trainer.trainer.stage_checkpoint``)."""

from dataclasses import dataclass


@dataclass
class Stage:
    """One training stage of a multi-stage model: its loss is the model's ``<name>_loss``, its examples
    ``stage_train_loader(stage, train_data)``, its trained modules those ``set_stage(name)`` leaves trainable."""

    name: str
    epochs: int
    learning_rate: float
    batch_size: int
    checkpoint_name: str  # the stage's part of its checkpoint file's name (TALLRec: lora)
    validate: bool = False  # evaluate on valid data each eval_step (early stopping) or not
    seed_offset: int = 0
