"""Checkpoint files, loaded without running code from them.

- The plugin's own checkpoints (stage checkpoints, resume states, trained LLM models' best weights) are ONE
  safetensors file: trained tensors (``weights.*``), optimizer tensors (``optimizer.*``) and RNG states
  (``rng.*``), with everything else (epoch, scores, optimizer hyper-parameters, the run's properties) as JSON in the
  file's metadata. No pickle is written or read.
- RecBole checkpoints (a CF backbone, a RecBole model's saved run) are pickles. They are read with a restricted
  unpickler that accepts only what RecBole writes (tensors, its Config, its enums, numpy scalars and dtypes,
  RecBole model classes); anything else is refused with one line, unless ``trust_checkpoint: True`` (full pickle:
  only for files you trust). torch's ``weights_only`` loader cannot read them (RecBole saves with pickle protocol 4).
"""

import importlib
import json
import os
import pickle
import random
import types
import zipfile

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from recbole_llmplugin.utils.errors import ConfigValueError, UnreadableFileError
from recbole_llmplugin.utils.files import atomic_write, short_reason

PLUGIN_SUFFIX = ".safetensors"

# --- RecBole pickles: restricted loading -----------------------------------------------------------------------
_ALLOWED = {
    "collections.OrderedDict",
    "builtins.set",
    "builtins.frozenset",
    "builtins.slice",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.device",
    "torch.Size",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
    "recbole.config.configurator.Config",
    "yaml.loader.FullLoader",
    "yaml.loader.SafeLoader",
    "yaml.loader.Loader",
}


def _allowed(module, name):
    if f"{module}.{name}" in _ALLOWED or module == "recbole.utils.enum_type" or module.startswith("numpy.dtypes"):
        return True
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return True
    plugin_models = ("recbole_llmplugin.model.llm_recommender.", "recbole_llmplugin.model.sequential_recommender.")
    if module.startswith("recbole.model.") or module.startswith(plugin_models):
        from recbole.model.abstract_recommender import AbstractRecommender

        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            return False
        return isinstance(obj, type) and issubclass(obj, AbstractRecommender)  # a model class, stored in the config
    return False


class RefusedGlobal(pickle.UnpicklingError):
    """A global a RecBole checkpoint does not hold (``module.name``), refused before it is resolved."""


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals RecBole checkpoints hold; anything else (a function to call) is refused."""

    def find_class(self, module, name):
        if not _allowed(module, name):
            raise RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


restricted_pickle = types.SimpleNamespace(
    __name__="recbole_llmplugin.restricted_pickle",
    Unpickler=RestrictedUnpickler,
    load=lambda handle, **kwargs: RestrictedUnpickler(handle, **kwargs).load(),
)


def load_recbole_checkpoint(path, map_location="cpu", trust=False):
    """A RecBole ``.pth`` checkpoint dict, read with the restricted unpickler (``trust``: plain pickle)."""
    try:
        return torch.load(
            path, map_location=map_location, weights_only=False, pickle_module=pickle if trust else restricted_pickle
        )
    except RefusedGlobal as error:
        raise UnreadableFileError(
            f"checkpoint '{path}' refers to {error}, which a RecBole checkpoint does not hold: refused (it could run "
            f"code); set trust_checkpoint: True only if you trust this file",
            f"it refers to {error}",
        ) from None
    except (
        pickle.UnpicklingError,  # not a pickle at all ("invalid load key")
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        zipfile.BadZipFile,
        IndexError,
        KeyError,
    ) as error:
        reason = short_reason(error, 100)
        raise UnreadableFileError(
            f"checkpoint '{path}' is not a readable torch checkpoint ({reason}); give the .pth a RecBole run saved",
            reason,
        ) from None


# --- the plugin's own checkpoints --------------------------------------------------------------------------------
def is_plugin_checkpoint(path):
    return str(path).endswith(PLUGIN_SUFFIX)


def optimizer_parts(optimizer):
    """(tensors, JSON-able rest) of an optimizer state dict."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state(tensors, meta):
    """The optimizer state dict back from ``optimizer_parts``."""
    state = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_parts(loader=None):
    """(tensors, JSON-able rest) of every RNG a training epoch draws from: torch (CPU, CUDA), numpy, python and
    the train loader's own generator (RecBole's loaders shuffle with one)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    generator = getattr(loader, "generator", None)
    if generator is not None:
        tensors["rng.loader"] = generator.get_state()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    rest = {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)], "python": [version, state, gauss]}
    return tensors, rest


def restore_rng(tensors, rest, loader=None):
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if loader is not None and "rng.loader" in tensors:
        loader.generator.set_state(tensors["rng.loader"])
    kind, keys, pos, has_gauss, cached = rest["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, state, gauss = rest["python"]
    random.setstate((version, tuple(state), gauss))


def save_plugin_checkpoint(path, meta, weights, extra_tensors=None):
    """One safetensors file: ``weights`` as ``weights.<name>``, ``extra_tensors`` as they are, ``meta`` as JSON."""
    tensors = {f"weights.{name}": tensor for name, tensor in weights.items()}
    tensors.update(extra_tensors or {})
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    text = json.dumps(meta, default=_json_default)
    size = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"recbole_llmplugin": text}), size=size)


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def load_plugin_checkpoint(path, map_location="cpu"):
    """(meta, tensors) of a plugin checkpoint; ``meta["weights"]`` holds the trained tensors by name."""
    try:
        with safe_open(path, framework="pt", device=str(map_location)) as handle:
            text = (handle.metadata() or {}).get("recbole_llmplugin")
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        reason = short_reason(error, 100)
        raise UnreadableFileError(
            f"checkpoint '{path}' is not a readable safetensors file ({reason}); delete it", reason
        ) from None
    if text is None:
        raise UnreadableFileError(
            f"checkpoint '{path}' was not written by recbole-llmplugin (no metadata); delete it", "no plugin metadata"
        )
    meta = json.loads(text)
    meta["weights"] = {name[len("weights.") :]: t for name, t in tensors.items() if name.startswith("weights.")}
    if meta.get("optimizer_meta") is not None:
        meta["optimizer"] = optimizer_state(tensors, meta["optimizer_meta"])
    return meta, tensors


def load_checkpoint(path, map_location="cpu", trust=False):
    """A checkpoint dict, the plugin's (``weights``: trained tensors) or RecBole's (``state_dict``, ``config``)."""
    path = str(path)
    if not os.path.isfile(path):
        raise ConfigValueError(f"checkpoint '{path}' does not exist")
    if is_plugin_checkpoint(path):
        return load_plugin_checkpoint(path, map_location)[0]
    return load_recbole_checkpoint(path, map_location, trust)


def config_overrides(config):
    """The properties a run was given (files, config_dict, command line: raw values), to rebuild its config from
    a checkpoint; ``cf_checkpoint`` as resolved."""
    raw = {**config.file_config_dict, **config.variable_config_dict, **config.cmd_config_dict}
    raw = {k: v for k, v in raw.items() if k not in ("model", "dataset", "config_files", "benchmark")}
    if "cf_checkpoint" in config.final_config_dict:
        raw["cf_checkpoint"] = config["cf_checkpoint"]
    return json.loads(json.dumps(raw, default=_json_default))
