"""Files the plugin keeps for reuse (the auto CF backbone, stage checkpoints, fixed candidates) that no longer load
-- a truncated copy, a disk that filled up -- are moved aside with a warning and made anew: the run ends as a fresh
one would, and the broken file is kept beside the new one."""

from conftest import BACKBONE_PROPS, TINY_DATASET

from recbole_llmplugin import run_recbole_llm


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _check_made_anew(kept, log):
    for path in kept:
        assert path.is_file()  # made anew
        assert len(list(path.parent.glob(path.name + ".corrupt-*"))) == 1  # the broken one, kept beside it
        assert f"'{path}' is unreadable" in log


def test_unreadable_kept_files_are_moved_aside_and_made_anew(workdir, allmrec_config, caplog):
    config = {**allmrec_config, **BACKBONE_PROPS, "cf_checkpoint": "auto", "checkpoint_dir": str(workdir / "saved")}
    first = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=config)
    saved = workdir / "saved"
    kept = [
        *saved.glob("eval_candidates/*.npz"),
        *saved.glob("*/*-stage[12]-*.safetensors"),
        *saved.glob("text_cache/*.safetensors"),
    ]
    assert len(kept) == 4, kept
    for path in kept:
        _truncate(path)
    caplog.clear()
    second = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=config)
    assert second["test_result"] == first["test_result"]  # trained and drawn anew, as the first run did
    _check_made_anew(kept, caplog.text)

    # a retrained backbone is another file (RecBole's pickle differs), so its stages train under a new name
    (backbone,) = saved.glob("cf_backbones/*.pth")
    _truncate(backbone)
    caplog.clear()
    third = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=config)
    assert third["companions"][0]["test_result"] == first["companions"][0]["test_result"]
    assert third["test_result"] == first["test_result"]
    _check_made_anew([backbone], caplog.text)


def _fills_the_disk(write, message):
    """A writer that puts a few bytes in its file, then fails as it does on a full disk."""

    def failing(obj, target, *args, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError(message)

    return failing


def test_a_full_disk_leaves_no_truncated_recbole_checkpoint(workdir, tiny_config, monkeypatch):
    import recbole.trainer.trainer as recbole_trainer

    import pytest

    from recbole_llmplugin.utils.errors import DiskFullError

    torch_save = _fills_the_disk(None, "[enforce fail at inline_container.cc:595] . unexpected pos 4224 vs 4112")
    monkeypatch.setattr(recbole_trainer.torch, "save", torch_save)
    with pytest.raises(DiskFullError, match=r"writing '.*SASRec-.*\.pth' failed: the disk holding '.*saved' is full"):
        run_recbole_llm("SASRec", TINY_DATASET, config_dict={**tiny_config, **BACKBONE_PROPS})
    assert [p.name for p in (workdir / "saved").iterdir()] == []  # nothing half-written


def test_a_full_disk_during_a_stage_checkpoint_is_one_error(workdir, allmrec_config, monkeypatch):
    import pytest

    import recbole_llmplugin.utils.checkpoints as checkpoints
    from recbole_llmplugin.utils.errors import DiskFullError

    message = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    monkeypatch.setattr(
        checkpoints, "save_file", lambda tensors, target, metadata=None: _fills_the_disk(0, message)(0, target)
    )
    config = {**allmrec_config, "checkpoint_dir": str(workdir / "saved")}
    with pytest.raises(DiskFullError, match=r"-stage1-.*\.safetensors' failed: .* MiB free; it needs about"):
        run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=config)
    assert list((workdir / "saved").glob("**/*stage1*.safetensors")) == []
