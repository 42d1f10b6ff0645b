"""What the plugin adds to RecBole's own trainer (the one ``get_trainer`` picks for SASRec, BPR, UniSRec...): a
checkpoint name no other run shares, checkpoints written whole, and the record of the epochs that ran."""

from recbole.utils import set_color

from recbole_llmplugin.trainer.trainer import unique_checkpoint_name
from recbole_llmplugin.utils.files import atomic_write


def keep_recbole_checkpoints(trainer, config):
    """Readies RecBole's ``trainer`` for a run: its checkpoint uniquely named and written atomically. Returns the
    function giving the fit's epoch record (``watch_stopping``)."""
    trainer.saved_model_file = unique_checkpoint_name(trainer.saved_model_file, ".pth")
    atomic_checkpoints(trainer)
    return watch_stopping(trainer, config)


def atomic_checkpoints(trainer):
    """RecBole's trainer writes its ``.pth`` with ``torch.save`` straight onto the file: an interruption or a full disk
    leaves a truncated checkpoint that a later ``cf_checkpoint: auto`` run would read. Here each save goes to a temp
    file first and replaces the checkpoint whole (``atomic_write``: a full disk is one line)."""
    save = trainer._save_checkpoint

    def _save_checkpoint(epoch, verbose=True, **kwargs):
        config = trainer.config
        if not config["single_spec"] and config["local_rank"] != 0:  # RecBole: only the main process writes
            return
        final = kwargs.pop("saved_model_file", trainer.saved_model_file)
        size = 3 * sum(p.numel() * p.element_size() for p in trainer.model.parameters())  # weights + Adam moments
        atomic_write(final, lambda tmp: save(epoch, verbose=False, saved_model_file=tmp, **kwargs), size=size)
        if verbose:
            trainer.logger.info(set_color("Saving current", "blue") + f": {final}")

    trainer._save_checkpoint = _save_checkpoint


def watch_stopping(trainer, config):
    """Records the epochs of a RecBole trainer's fit; returns a function giving ``epochs_run``, ``best_epoch`` (the
    last epoch whose weights were kept, 1-based), ``epoch_cap`` and ``stopped_by``: ``validation`` when early
    stopping ended it before the cap, ``epoch cap`` when it ran every epoch (then it may still have been improving)."""
    kept = []
    save = trainer._save_checkpoint

    def _save_checkpoint(epoch, *args, **kwargs):
        kept.append(epoch)
        return save(epoch, *args, **kwargs)

    trainer._save_checkpoint = _save_checkpoint

    def summary():
        run = len(getattr(trainer, "train_loss_dict", {}) or {})
        best = max(kept) + 1 if kept and max(kept) >= 0 else None
        cap = config["epochs"]
        return {
            "epochs_run": run,
            "best_epoch": best,
            "epoch_cap": cap,
            "stopped_by": "validation" if run < cap else "epoch cap",
        }

    return summary
