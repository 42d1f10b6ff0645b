"""Benchmark scripts that print their figures (never timed unit tests).

    python -m recbole_llmplugin.tools.bench text-encoder --dataset=ml-100k --config_files=properties/benchmark/quick-ml100k.yaml

    python -m recbole_llmplugin.tools.bench stage2 --dataset=ml-100k --config_files=properties/benchmark/quick-ml100k.yaml

``text-encoder``: A-LLMRec stage-1 seconds per epoch with ``text_encoder_trainable`` none (cached text
embeddings), last_layer and all, on the same backbone and data (the backbone is trained first if needed).

``scale``: stage 2 and evaluation of A-LLMRec and TALLRec (``--models``) as a run does them, in one process or
data-parallel (``--nproc``, RecBole's launch; or under torchrun), with fresh stage checkpoints (the CF backbone is
reused): seconds per stage-2 epoch, training examples and prompt tokens per second, evaluation seconds per user,
peak GPU memory and peak RSS of the main process, and hit@1 with its standard error. ``.ci/gpu-bench`` runs it on a
GPU machine (``properties/benchmark/gpu-scale-beauty.yaml``); the tests run it scaled down on the CPU.

    python -m recbole_llmplugin.tools.bench scale --dataset=ml-100k --config_files=properties/benchmark/quick-ml100k.yaml --nproc=2

``stage2``: A-LLMRec stage-2 seconds per training example (objectives generate and rank) and score-mode
evaluation seconds per user (float32, and ``llm_eval_quantization: int8``), with the item text template of
the properties and without the release year, each beside its compute bound: 2 x (the LLM's non-embedding
parameters) x tokens per forward pass (training: twice that, for the input-gradient backward pass), at the
float32 matrix-multiply rate measured on this machine. Stage 1 is trained (or reused) first.
"""

import argparse
import os
import sys
import shutil
import time

import torch
from recbole.utils import init_logger, init_seed
from tabulate import tabulate

from recbole_llmplugin.quick_start.backbones import prepare_backbone
from recbole_llmplugin.quick_start.compare import metric_cell
from recbole_llmplugin.model.llm_recommender.allmrec import ALLMRec
from recbole_llmplugin.quick_start.quick_start import build_config, prepare_data
from recbole_llmplugin.utils.registry import get_model_class
from recbole_llmplugin.utils.resources import peak_rss_mb
from recbole_llmplugin.model.stage import Stage
from recbole_llmplugin.utils.errors import one_line_errors
from recbole_llmplugin.config.properties import choices


def stage1_epoch_seconds(dataset, config_files, mode, epochs=1):
    overrides = {"text_encoder_trainable": mode, "show_progress": False}
    config, _ = build_config("ALLMRec", dataset, config_files, overrides)
    prepare_backbone(config, overrides)
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
            sum(model.stage1_loss(batch)).backward()
            optimizer.step()
    return setup, (time.time() - start) / epochs, len(loader.dataset)


def matmul_gflops(size=(512, 576, 1536), repeats=20):
    """float32 matrix-multiply rate of this machine at an LLM layer's shape (GFLOP/s)."""
    m, k, n = size
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    start = time.time()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.time() - start) / 1e9


def non_embedding_parameters(llm):
    embedding = llm.get_input_embeddings().weight
    return sum(p.numel() for p in llm.parameters() if p is not embedding and p.data_ptr() != embedding.data_ptr())


def stage2_costs(dataset, config_files, overrides, steps, users):
    """Seconds per stage-2 example (generate, rank), per evaluated user (float32, int8) and token counts."""
    from recbole_llmplugin.tools.learning_curve import rank_loader
    from recbole_llmplugin.trainer.trainer import StagedTrainer

    config, _ = build_config(
        "ALLMRec", dataset, config_files, {**overrides, "show_progress": False, "eval_user_sample": users}
    )
    prepare_backbone(config, overrides)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    _, train_data, _, test_data = prepare_data(config)
    model = ALLMRec(config, train_data._dataset)
    trainer = StagedTrainer(config, model)
    stage1, stage2 = model.training_stages()
    trainer._fit_stage(stage1, train_data, None, False, False, None)
    model.set_stage("stage2")
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = [b for _, b in zip(range(steps + 1), model.stage_train_loader(stage2, train_data))]
    row = {"prompt tokens / example": None}
    for objective in ("generate", "rank"):
        model.objective = objective
        for index, batch in enumerate(batches):
            if index == 1:  # the first step warms up
                start, examples = time.time(), 0
                model.prompts.counts.update(train_examples=0, train_tokens=0)
            optimizer.zero_grad()
            model.total_loss(model.calculate_loss(batch)).backward()
            optimizer.step()
            examples = examples + len(batch) if index else 0
        row[f"s / example ({objective})"] = (time.time() - start) / examples
        row["prompt tokens / example"] = model.token_stats()["prompt_tokens_per_example"]
    model.eval()
    for quantization in choices("llm_eval_quantization"):
        model.eval_quantization = quantization
        start = time.time()
        ranks = rank_loader(model, test_data)
        row[f"eval s / user ({quantization})"] = (time.time() - start) / len(ranks)
        row[f"eval hit@1 ({quantization})"] = sum(r == 0 for r in ranks) / len(ranks)
    row["prompt tokens / user"] = model.token_stats()["prompt_tokens_per_user"]
    row["eval users"] = len(ranks)
    row["non-embedding parameters"] = non_embedding_parameters(model.llm)
    return row


def scale_rows(models, dataset, config_files, overrides, launch=None):
    """Cost rows of ``models`` trained and evaluated by every process of this run (``launch``: RecBole's launch
    keys), each with fresh stage checkpoints in a new folder; the CF backbone is trained once and reused. The main
    process returns the rows (the others None) and removes the folder."""
    from recbole_llmplugin.quick_start.compare import run_models
    from recbole_llmplugin.utils.distributed import barrier, is_main, main_value, world_size

    settings = {**overrides, **(launch or {}), "show_progress": False}
    with_backbone = [m for m in models if getattr(get_model_class(m), "needs_cf_backbone", False)]
    config, _ = build_config(with_backbone[0] if with_backbone else models[0], dataset, config_files, settings)
    if with_backbone:
        prepare_backbone(config, settings)  # config["cf_checkpoint"] now names it
    folder = os.path.join(config["checkpoint_dir"], main_value(f"scale-{time.strftime('%Y%m%d-%H%M%S')}"))
    fresh = {**settings, "checkpoint_dir": folder}
    if with_backbone:
        fresh["cf_checkpoint"] = config["cf_checkpoint"]
    results = run_models(models, dataset, config_files, config_dict=fresh, isolate_failures=False)
    barrier()
    if not is_main():
        return None
    shutil.rmtree(folder, ignore_errors=True)
    return [_scale_row(result, world_size(), str(config["device"])) for result in results]


def _scale_row(result, processes, device):
    costs, metrics = result["costs"], result["test_result"]
    seconds, epochs = costs.get("stage2_seconds"), costs.get("stage2_epochs") or 1
    examples = costs.get("train_examples", 0) * processes  # each process counts its share (equal up to one row)
    tokens = examples * (costs.get("prompt_tokens_per_example") or 0)
    hit, users = float(metrics["hit@1"]), costs["test_users"]
    se = (result.get("test_se") or {}).get("hit@1")
    return {
        "model": result.get("label") or result["model"],
        "processes": processes,
        "device": device,
        "stage-2 s / epoch": seconds / epochs if seconds else None,
        "train examples / s": examples / seconds if seconds and examples else None,
        "prompt tokens / s": tokens / seconds if seconds and tokens else None,
        "eval s / user": costs["eval_seconds_per_user"],
        "eval users": users,
        "peak GPU MiB": costs.get("peak_gpu_mb"),
        "peak RSS MiB": costs["peak_rss_mb"],
        "hit@1": metric_cell(hit, se),
    }


def scale_table(rows):
    def cell(value):
        return "-" if value is None else f"{value:,.3g}" if isinstance(value, float) else value

    return tabulate([[cell(v) for v in row.values()] for row in rows], headers=list(rows[0]), tablefmt="github")


def run_scale(args, config_files, overrides):
    from recbole_llmplugin.quick_start.cli import launch_keys
    from recbole_llmplugin.utils.distributed import run_launched

    models = [m for m in args.models.split(",") if m]
    launch = launch_keys(args)
    rows = run_launched(scale_rows, (models, args.dataset, config_files, overrides), args.nproc, launch)
    if rows:
        print(f"\nStage 2 and evaluation on {args.dataset} ({rows[0]['processes']} process(es), {rows[0]['device']})\n")
        print(scale_table(rows))
    return rows


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_llmplugin.tools.bench")
    parser.add_argument("benchmark", choices=["text-encoder", "stage2", "scale"])
    parser.add_argument("--models", default="ALLMRec,TALLRec", help="scale: models to run")
    parser.add_argument("--nproc", type=int, default=1, help="scale: processes on this machine (data-parallel)")
    parser.add_argument("--ip", type=str, default="localhost")
    parser.add_argument("--port", type=str, default="5678")
    parser.add_argument("--world_size", type=int, default=-1)
    parser.add_argument("--group_offset", type=int, default=0)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--config_files", default=None)
    parser.add_argument("--steps", type=int, default=5, help="stage2: timed training steps per objective")
    parser.add_argument("--users", type=int, default=40, help="stage2: evaluated users per quantisation")
    parser.add_argument(
        "--templates",
        default="{movie_title} ({release_year})|{movie_title}",
        help="stage2: item_text_template values to compare, separated by |",
    )
    args, _ = parser.parse_known_args(argv)
    files = args.config_files.split() if args.config_files else None
    if args.benchmark == "scale":
        run_scale(args, files, {})
        return
    if args.benchmark == "stage2":
        rate = matmul_gflops()
        table = []
        for template in args.templates.split("|"):
            row = stage2_costs(args.dataset, files, {"item_text_template": template}, args.steps, args.users)
            flops = 2 * row["non-embedding parameters"]
            bound_train = 2 * flops * row["prompt tokens / example"] / (rate * 1e9)
            bound_eval = flops * row["prompt tokens / user"] / (rate * 1e9)
            table.append(
                [
                    template,
                    f"{row['prompt tokens / example']:.0f}",
                    f"{row['s / example (generate)']:.2f}",
                    f"{row['s / example (rank)']:.2f}",
                    f"{bound_train:.2f}",
                    f"{row['prompt tokens / user']:.0f}",
                    f"{row['eval s / user (none)']:.2f}",
                    f"{row['eval s / user (int8)']:.2f}",
                    f"{bound_eval:.2f}",
                    f"{row['eval hit@1 (none)']:.3f} / {row['eval hit@1 (int8)']:.3f} (n={row['eval users']})",
                ]
            )
        print(
            f"\nA-LLMRec stage 2 and score-mode evaluation on {args.dataset} (matmul rate {rate:.0f} GFLOP/s, "
            f"peak RSS {peak_rss_mb():.0f} MiB; bounds count prompt tokens only)\n"
        )
        print(
            tabulate(
                table,
                headers=[
                    "item text",
                    "prompt tok / ex",
                    "train s/ex generate",
                    "train s/ex rank",
                    "bound s/ex",
                    "prompt tok / user",
                    "eval s/user fp32",
                    "eval s/user int8",
                    "bound s/user",
                    "hit@1 fp32 / int8",
                ],
                tablefmt="github",
            )
        )
        return
    rows = []
    for mode in choices("text_encoder_trainable"):
        setup, seconds, examples = stage1_epoch_seconds(args.dataset, files, mode)
        rows.append([mode, f"{setup:.1f}", f"{seconds:.1f}", examples])
    print(
        f"\nA-LLMRec stage 1 on {args.dataset}: seconds per epoch by text_encoder_trainable (peak RSS {peak_rss_mb():.0f} MiB)\n"
    )
    print(
        tabulate(rows, headers=["text_encoder_trainable", "model setup s", "s / epoch", "examples"], tablefmt="github")
    )


if __name__ == "__main__":
    sys.exit(main())
