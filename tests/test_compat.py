import numpy as np
import pandas as pd
import pytest
import torch

from recbole_llmplugin.utils import compat
from recbole_llmplugin.utils.errors import DatasetNotFoundError


class _Pickled:
    def __init__(self, value):
        self.value = value


def test_numpy_aliases_exist_without_a_config():
    assert np.float is np.float64 or np.float is float
    assert np.float_ is np.float64
    from recbole.evaluator.metrics import MRR  # its metric_info builds an array of dtype np.float

    class _Config(dict):
        pass

    metric = MRR(_Config(topk=[2], metric_decimal_place=4))
    ranks = np.array([[True, False], [False, True], [False, False]])  # hit at 1, at 2, none
    assert metric.metric_info(ranks)[:, -1].tolist() == [1.0, 0.5, 0.0]


def test_recbole_config_builds_on_numpy2(workdir):
    from recbole.config import Config

    config = Config(model="Pop", dataset="ml-100k", config_dict={"state": "WARNING"})
    assert config["model"] == "Pop"


def test_recbole_trainer_loads_pickled_checkpoints_with_recbole_types_only(tmp_path):
    import pickle

    import recbole.trainer.trainer as trainer_module
    from recbole.utils import ModelType

    path = tmp_path / "ckpt.pth"
    state = {"state_dict": {"w": torch.ones(2)}, "type": ModelType.SEQUENTIAL, "n": np.int64(3)}
    torch.save(state, path, pickle_protocol=4)  # as RecBole saves: the weights-only loader cannot read protocol 4
    with pytest.raises(Exception), pytest.warns(UserWarning, match="pickle protocol 4"):
        torch.load(path)  # torch's own default stays weights_only=True
    loaded = trainer_module.torch.load(path)
    assert loaded["type"] is ModelType.SEQUENTIAL and torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    torch.save({"config": _Pickled(3)}, path, pickle_protocol=4)  # any other global is refused
    with pytest.raises(pickle.UnpicklingError, match="_Pickled"):
        trainer_module.torch.load(path)


def test_quick_start_imports_without_ray():
    import sys

    import recbole.quick_start.quick_start as quick_start  # module-level `from ray import tune`

    assert callable(quick_start.run_recbole)
    if getattr(sys.modules.get("ray"), "__recbole_llmplugin_stub__", False):  # ray absent: the plugin's stand-in
        with pytest.raises(ImportError, match="ray is not installed; RecBole's ray-based tuning is unavailable"):
            quick_start.tune.run()


def test_pandas_3_is_refused(monkeypatch):
    monkeypatch.setattr(pd, "__version__", "3.0.0")
    with pytest.raises(ImportError, match="pandas<3"):
        compat._check_pandas()


def test_downloader_never_starts():
    from recbole.data.dataset import Dataset

    fake = type("D", (), {"dataset_name": "nope", "dataset_path": "/nowhere/nope"})()
    with pytest.raises(DatasetNotFoundError, match="nope"):
        Dataset._download(fake)


def test_sequential_models_leave_anomaly_detection_off():
    import torch

    import recbole.model.sequential_recommender  # noqa: F401  (its sine.py switches anomaly detection on)
    from recbole_llmplugin.utils.registry import get_model_class

    get_model_class("SASRec")
    assert not torch.is_anomaly_enabled()
