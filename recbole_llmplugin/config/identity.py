"""One identity rule for the plugin's trained artefacts (stage checkpoints, the CF backbone).

An artefact is reused only by a run whose resolved RecBole config equals the one it was trained under, minus
``RUN_LOCAL_KEYS`` (settings that change where or how visibly a run works, never what it trains or measures),
plus the content of the files it was trained on (the dataset's atomic files; the CF checkpoint's bytes).
There are no hand-written lists of "keys that matter": a new property changes the identity by default.

Content-addressed caches keep their own keys: item-text embeddings (encoder + texts) and the fixed evaluation
candidates (data hash + N + seed), which every model must share whatever its other properties.
"""

import hashlib
import os

from recbole_llmplugin.utils.files import digest

RUN_LOCAL_KEYS = frozenset(
    {
        # where and how the run executes
        "device",
        "gpu_id",
        "use_gpu",
        "local_rank",
        "nproc",
        "world_size",
        "offset",
        "ip",
        "port",
        "group_offset",  # run_recbole.py's flag for offset, read from the command line as a key too
        "single_spec",
        "worker",
        # the command line's file names (their content is in the resolved config)
        "config_files",
        "benchmark",
        # where files go, what is shown
        "checkpoint_dir",
        "data_path",
        "dataset_save_path",
        "dataloaders_save_path",
        "save_dataset",
        "save_dataloaders",
        "state",
        "show_progress",
        "verbose",  # RecBole turns it off in the other processes of a data-parallel run
        "log_wandb",
        "wandb_project",
        "metric_decimal_place",
        "loss_decimal_place",
        "eval_match_row",  # one more row from the same trained weights
        "target_domain",  # cross-domain: the same source training, then a test on another dataset
        "cross_domain_user",
        # evaluation batching (same scores in any batch layout; tested)
        "eval_batch_size",
        "llm_eval_user_batch",
        "llm_score_row_chunk",
        # how training is laid out over processes, micro-batches and devices (the same training up to float
        # rounding; tested): RecBole's launch keys above, and (not llm_gradient_checkpointing: it puts the LLM in
        # train mode, which turns on the dropout of LLMs that have it, e.g. OPT's 0.1)
        "llm_micro_batch_size",
        "llm_device_map",
        # resolved separately: replaced by the content of the file it names
        "cf_checkpoint",
        "rerank_checkpoint",
        "trust_checkpoint",
        "lock_timeout",  # how long to wait for another run
        # a benchmark file's own keys (its per-model overrides reach each run's config directly)
        "benchmark_models",
        "benchmark_datasets",
        "benchmark_seeds",
        "benchmark_output",
        "benchmark_model_properties",
        "benchmark_reference",
        "benchmark_paired_test",
    }
)


def config_identity(config, exclude=()):
    """The resolved config as a dict, minus run-local keys (and ``exclude``)."""
    drop = RUN_LOCAL_KEYS | set(exclude)
    return {k: v for k, v in config.final_config_dict.items() if k not in drop}


def file_digest(path):
    """sha1 of a file's bytes."""
    sha = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def dataset_identity(config):
    """(name, content digest) of each atomic file of the run's dataset."""
    folder = (
        os.path.join(config["data_path"], config["dataset"])
        if not str(config["data_path"]).rstrip("/").endswith(config["dataset"])
        else config["data_path"]
    )
    if not os.path.isdir(folder):
        return []
    return [
        (name, file_digest(os.path.join(folder, name)))
        for name in sorted(os.listdir(folder))
        if name.startswith(config["dataset"] + ".") and os.path.isfile(os.path.join(folder, name))
    ]


# files of a model folder identified by their bytes (configs, tokenizers); any other file (weights) by size and mtime
_READ_SUFFIXES = (".json", ".txt", ".model", ".yaml", ".py", ".md")


def model_identity(name):
    """A model named by ``llm_path`` / ``text_encoder``: the name, and for a local folder what is in it (each small
    file's bytes, each weight file's name, size and modification time), so that a folder changed under the same
    path makes new artefacts. An alias or hub id is its name (its content is fixed by the package or revision)."""
    folder = str(name)
    if not os.path.isdir(folder):
        return [folder]
    content = []
    for root, _, files in sorted(os.walk(folder)):
        for file in sorted(files):
            path = os.path.join(root, file)
            relative = os.path.relpath(path, folder)
            if file.endswith(_READ_SUFFIXES):
                content.append((relative, file_digest(path)))
            else:
                stat = os.stat(path)
                content.append((relative, stat.st_size, stat.st_mtime_ns))
    return [folder, content]


def artefact_digest(config, exclude=()):
    """Digest naming a trained artefact of this run: its config identity, its data, its CF checkpoint, and the
    content of its LLM and text-encoder folders."""
    checkpoint = config["cf_checkpoint"]
    backbone = file_digest(checkpoint) if checkpoint and os.path.isfile(str(checkpoint)) else None
    models = [model_identity(config[key]) for key in ("llm_path", "text_encoder") if config[key]]
    return digest(config_identity(config, exclude), dataset_identity(config), backbone, models)
