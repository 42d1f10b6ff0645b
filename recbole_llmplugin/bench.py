"""Benchmark scripts that print their figures (never timed unit tests).

    python -m recbole_llmplugin.bench text-encoder --dataset=ml-100k --config_files=properties/benchmark/quick-ml100k.yaml

``text-encoder``: A-LLMRec stage-1 seconds per epoch with ``text_encoder_trainable`` none (cached text
embeddings), last_layer and all, on the same backbone and data (the backbone is trained first if needed).
"""

import argparse
import time

import torch
from recbole.utils import init_logger, init_seed
from tabulate import tabulate

from recbole_llmplugin.models.allmrec import ALLMRec
from recbole_llmplugin.quick_start import build_config, prepare_data
from recbole_llmplugin.resources import peak_rss_mb
from recbole_llmplugin.trainer import Stage


def stage1_epoch_seconds(dataset, config_files, mode, epochs=1):
    overrides = {"text_encoder_trainable": mode, "show_progress": False}
    config, _ = build_config("ALLMRec", dataset, config_files, overrides)
    ALLMRec.prepare_run(config, config_files, overrides)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    _, train_data, _, _ = prepare_data(config)
    start = time.time()
    model = ALLMRec(config, train_data._dataset)
    setup = time.time() - start
    stage = Stage("stage1", epochs, config["stage1_learning_rate"], config["stage1_batch_size"], "unused")
    loader = model.stage_train_loader(stage, train_data)
    model.set_stage("stage1")
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=stage.learning_rate)
    start = time.time()
    for _ in range(epochs):
        for batch in loader:
            optimizer.zero_grad()
            sum(model.calculate_loss(batch)).backward()
            optimizer.step()
    return setup, (time.time() - start) / epochs, len(loader.dataset)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_llmplugin.bench")
    parser.add_argument("benchmark", choices=["text-encoder"])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--config_files", default=None)
    args, _ = parser.parse_known_args(argv)
    files = args.config_files.split() if args.config_files else None
    rows = []
    for mode in ("none", "last_layer", "all"):
        setup, seconds, examples = stage1_epoch_seconds(args.dataset, files, mode)
        rows.append([mode, f"{setup:.1f}", f"{seconds:.1f}", examples])
    print(f"\nA-LLMRec stage 1 on {args.dataset}: seconds per epoch by text_encoder_trainable (peak RSS {peak_rss_mb():.0f} MiB)\n")
    print(tabulate(rows, headers=["text_encoder_trainable", "model setup s", "s / epoch", "examples"], tablefmt="github"))


if __name__ == "__main__":
    main()
