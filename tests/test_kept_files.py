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
