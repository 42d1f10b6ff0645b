"""Narrow fixes that let RecBole 1.2.1 run on the current numpy / torch / ray stack.

Imported by ``recbole_llmplugin/__init__.py`` before anything imports RecBole. Each fix is
idempotent, touches only what RecBole needs, and says which break it answers. Nothing in
RecBole is forked or vendored.
"""

import collections
import contextlib
import functools
import importlib
import importlib.util
import os
import re
import sys
import types
import warnings

import numpy as np
import pandas as pd
import torch


def _fix_numpy_aliases():
    # numpy 2 removed np.float_/np.complex_/np.unicode_ (RecBole's Config.compatibility_settings
    # reads them and crashes) and numpy 1.24 removed np.float/np.int/np.bool/np.long, which
    # RecBole's metrics and layers use. The latter are re-created by Config only when a Config is
    # built, not when one is unpickled from a checkpoint, so define them all here once.
    aliases = {
        "float_": np.float64,
        "complex_": np.complex128,
        "unicode_": np.str_,
        "float": np.float64,
        "int": np.int_,
        "bool": np.bool_,
        "complex": np.complex128,
        "object": np.object_,
        "str": np.str_,
        "long": np.int_,
    }
    for name, value in aliases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns on some removed names before raising
            present = hasattr(np, name)
        if not present:
            setattr(np, name, value)


def _fix_ray_import():
    # recbole.quick_start does `from ray import tune` at module level, only for hyper-parameter
    # tuning. ray is not a dependency of this plugin (RecBole pins ray<=2.6.3, which has no wheels
    # for the current Python/numpy), so give that import an empty stand-in when ray is absent.
    if importlib.util.find_spec("ray") is not None or "ray" in sys.modules:
        return
    ray = types.ModuleType("ray")
    tune = types.ModuleType("ray.tune")

    def _missing(*args, **kwargs):
        raise ImportError("ray is not installed; RecBole's ray-based tuning is unavailable: pip install 'ray[tune]'")

    def _tune_attribute(name):
        if name.startswith("__"):  # keep introspection (inspect, pickle) working
            raise AttributeError(name)
        return _missing

    tune.__getattr__ = _tune_attribute
    ray.tune = tune
    ray.__recbole_llmplugin_stub__ = True
    sys.modules["ray"] = ray
    sys.modules["ray.tune"] = tune


class _TorchWithPickleLoad(types.ModuleType):
    """The torch module, except that ``load`` reads RecBole's pickles with the plugin's restricted unpickler."""

    def __init__(self, torch_module):
        super().__init__(torch_module.__name__)
        self._torch = torch_module

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def load(self, *args, **kwargs):
        from recbole_llmplugin.utils.checkpoints import restricted_pickle

        kwargs.setdefault("weights_only", False)
        kwargs.setdefault("pickle_module", restricted_pickle)
        return self._torch.load(*args, **kwargs)


def _fix_torch_load():
    # torch >= 2.6 defaults torch.load(weights_only=True); RecBole pickles its Config and numpy
    # state into checkpoints with protocol 4, which the weights-only loader cannot read, so its trainer's
    # resume and best-model reload fail. Give only RecBole's trainer module a torch whose load uses the
    # plugin's restricted unpickler (RecBole's own types only); torch.load elsewhere is untouched.
    # (RecBole's quick_start.load_data_and_model imports torch locally and cannot be reached this way: use recbole_llmplugin.load_data_and_model, which reads RecBole checkpoints.)
    import torch

    module = importlib.import_module("recbole.trainer.trainer")
    if not isinstance(module.torch, _TorchWithPickleLoad):
        module.torch = _TorchWithPickleLoad(torch)


def _check_pandas():
    # pandas 3 turns RecBole's `df[field].fillna(value, inplace=True)` (dataset.py) into a no-op
    # under copy-on-write, silently leaving NaN in features. The requirements pin pandas<3; refuse
    # to run rather than produce wrong data if someone upgraded it.
    if int(pd.__version__.split(".")[0]) >= 3:
        raise ImportError(
            f"pandas {pd.__version__} breaks RecBole 1.2.1's in-place fillna; install pandas<3: pip install 'pandas<3'"
        )


def _fix_downloader():
    # RecBole downloads a missing dataset and asks for confirmation on stdin; offline that
    # errors or hangs. Fail at once with the plugin's dataset error instead.
    from recbole.data.dataset import dataset as dataset_module

    from recbole_llmplugin.utils.errors import DatasetNotFoundError

    def _no_download(self):
        raise DatasetNotFoundError(
            f"dataset '{self.dataset_name}' not found in '{self.dataset_path}' and downloads are disabled: "
            f"put {self.dataset_name}.inter (and .item) there or set data_path"
        )

    dataset_module.Dataset._download = _no_download


def _fix_anomaly_detection():
    # recbole/model/sequential_recommender/sine.py calls torch.autograd.set_detect_anomaly(True) at import
    # time, and the package __init__ imports it with every sequential model (SASRec included): every later
    # forward and backward pass then records a Python stack trace per operation, which slowed SASRec and
    # LLM training several-fold. Import the package now and switch the debugging mode back off.
    import recbole.model.sequential_recommender  # noqa: F401

    torch.autograd.set_detect_anomaly(False)


def _fix_distributed_device():
    # RecBole 1.2.1's Config._init_device starts torch.distributed only with NCCL on cuda:<local_rank>, asserts one
    # gpu_id per process, and does so for every Config it builds: a CPU run with nproc > 1 fails (no NCCL, one
    # gpu_id), and a plugin run, which builds several Configs per process (its CF backbone's, its own), would start
    # the process group twice. With local_rank set: gloo on CPU (NCCL on CUDA, as RecBole), torchrun's env://
    # rendezvous under torchrun, the group started once per process; the rest is RecBole's own behaviour.
    from recbole.config import configurator

    original = configurator.Config._init_device
    if getattr(original, "_recbole_llmplugin", False):
        return

    def _init_device(self):
        settings = self.final_config_dict
        if "local_rank" not in settings:
            return original(self)
        from recbole_llmplugin.utils.distributed import share_cpu_threads, start_process_group

        gpu_id = settings["gpu_id"]
        gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, tuple) else str(gpu_id)
        settings["gpu_id"] = gpu_id
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
        cuda = len(gpu_id) > 0 and torch.cuda.is_available()
        start_process_group(settings, "nccl" if cuda else "gloo")
        settings["device"] = torch.device("cuda", settings["local_rank"]) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(settings["local_rank"])
        else:
            share_cpu_threads(settings["nproc"])
        settings["single_spec"] = False
        if settings["local_rank"] + settings["offset"] != 0:  # as RecBole: only the main process logs and shows
            settings["state"] = "error"
            settings["show_progress"] = False
            settings["verbose"] = False

    _init_device._recbole_llmplugin = True
    configurator.Config._init_device = _init_device


def _fix_ddp_on_cpu():
    # RecBole's AbstractTrainer wraps a model in DistributedDataParallel(model, device_ids=[local_rank]); torch refuses
    # device_ids for a module on the CPU (gloo runs): pass none there.
    module = importlib.import_module("recbole.trainer.trainer")
    ddp = module.DistributedDataParallel
    if getattr(ddp, "_recbole_llmplugin", False):
        return

    def DistributedDataParallel(model, device_ids=None, **kwargs):
        if next(model.parameters()).device.type == "cpu":
            device_ids = None
        return ddp(model, device_ids=device_ids, **kwargs)

    DistributedDataParallel._recbole_llmplugin = True
    module.DistributedDataParallel = DistributedDataParallel


class _Counts(collections.Counter):
    """RecBole's item / user counts, with the ``cpu()`` its collector calls on every collected value."""

    def cpu(self):
        return self


def _fix_popularity_counts():
    # RecBole's Collector.data_collect stores the training data's item and user counts (collections.Counter) for the
    # popularity metrics (AveragePopularity, TailPercentage), then get_data_struct calls .cpu() on every stored value:
    # "'Counter' object has no attribute 'cpu'" for every model. Store them as a Counter that has it.
    collector = importlib.import_module("recbole.evaluator.collector").Collector
    original = collector.data_collect
    if getattr(original, "_recbole_llmplugin", False):
        return

    @functools.wraps(original)
    def data_collect(self, train_data):
        original(self, train_data)
        for key in ("data.count_items", "data.count_users"):
            if key in self.data_struct and isinstance(self.data_struct.get(key), collections.Counter):
                self.data_struct.set(key, _Counts(self.data_struct.get(key)))

    data_collect._recbole_llmplugin = True
    collector.data_collect = data_collect


# Warnings RecBole 1.2.1 itself raises under the current stack, for things the plugin cannot change and that do not
# change a result: (category, message start, why it is harmless)
RECBOLE_WARNINGS = (
    # Config evaluates every string value given on the command line or in config_dict; a text such as a template
    # "{title} ({year})" compiles as a call on a set before it is kept as the string it is
    (SyntaxWarning, "'set' object is not callable", "RecBole's Config eval() of a string value"),
    # Dataset._fill_nan fills missing values with a chained fillna(inplace=True), which pandas < 3 still applies
    # (pandas 3, where it would not, is refused on import)
    (FutureWarning, "A value is trying to be set on a copy of a DataFrame", "RecBole's Dataset._fill_nan"),
    # the sequential dataset's augmentation calls numpy functions (argsort, ...) on torch tensors
    (DeprecationWarning, "__array_wrap__ must accept context", "RecBole's SequentialDataset.data_augmentation"),
    # Trainer._train_epoch builds a torch.cuda.amp.GradScaler, disabled unless enable_scaler
    (FutureWarning, "`torch.cuda.amp.GradScaler(args...)` is deprecated", "RecBole's Trainer._train_epoch"),
)


@contextlib.contextmanager
def recbole_warnings_quiet():
    """Around calls into RecBole (Config, create_dataset, data_preparation, its Trainer and training epochs): its
    known warnings above are not shown; every other warning is."""
    with warnings.catch_warnings():
        for category, message, _ in RECBOLE_WARNINGS:
            warnings.filterwarnings("ignore", message=re.escape(message), category=category)
        yield


class _NoTensorBoard:
    """Takes RecBole's TensorBoard calls and writes nothing (the other processes of a data-parallel run)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def tensorboard_on_main_only():
    """RecBole's Trainer opens a TensorBoard writer (a file) in every process: only the main one keeps a real one."""
    from recbole_llmplugin.utils.distributed import is_main

    module = importlib.import_module("recbole.trainer.trainer")
    original = module.get_tensorboard
    if not is_main():
        module.get_tensorboard = lambda logger: _NoTensorBoard()
    try:
        yield
    finally:
        module.get_tensorboard = original


@functools.lru_cache(maxsize=None)
def apply():
    """Apply every fix once; returns True."""
    _check_pandas()
    _fix_numpy_aliases()
    _fix_ray_import()
    _fix_torch_load()
    _fix_downloader()
    _fix_anomaly_detection()
    _fix_distributed_device()
    _fix_ddp_on_cpu()
    _fix_popularity_counts()
    return True
