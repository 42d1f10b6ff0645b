"""Learning curve of an LLM recommender's trained stage: accuracy after N training examples.

    python -m recbole_llmplugin.tools.learning_curve --model=ALLMRec --dataset=ml-100k \
        --config_files=properties/benchmark/cpu-accuracy-ml100k.yaml --points=100,300,1000 \
        --label=rank-lr1e-3 --output=results/learning-curve [--key=value ...]

Earlier stages (A-LLMRec stage 1, the CF backbone) are trained or reused exactly as a normal run does;
the last stage (stage 2, or TALLRec's LoRA stage) is trained example by example, and at each point of
``--points`` (cumulative training examples) the model is scored on

- the test users of the run (``eval_user_sample`` of them, RecBole's fixed candidates), and
- ``--train_users`` of the stage's own training examples (their target + N distinct negatives outside
  the history, drawn once from a fixed seed): a model that cannot rank what it was trained on points to
  the objective or the wiring rather than to generalisation.

Each point reports hit@1, ndcg@10 and their standard errors over users. Results are kept per label in
``<output>/curve.json`` (a re-run skips finished points and resumes from the last saved weights), and
``curve.md`` / ``curve.png`` are redrawn from every label in the folder. The CF backbone's test result on
the same users and candidates is drawn as a reference line.
"""

import argparse
import json
import math
import sys
import time
from logging import getLogger
from pathlib import Path

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.utils import init_logger, init_seed
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from recbole_llmplugin.quick_start.backbones import prepare_backbone
from recbole_llmplugin.utils.files import atomic_write
from recbole_llmplugin.config.recbole_config import derive_config
from recbole_llmplugin.quick_start.quick_start import build_config, needs_backbone, prepare_data, restore
from recbole_llmplugin.utils.registry import get_model_class
from recbole_llmplugin.utils.checkpoints import load_checkpoint
from recbole_llmplugin.evaluator.standard_errors import standard_error
from recbole_llmplugin.trainer.trainer import StagedTrainer
from recbole_llmplugin.utils.errors import ConfigValueError, one_line_errors


def metrics_from_ranks(ranks):
    """hit@1, ndcg@10 and their standard errors from 0-based ranks of the positive."""
    ranks = np.asarray(ranks)
    hit1 = (ranks == 0).astype(float)
    ndcg10 = np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)
    return {
        "users": len(ranks),
        "hit@1": float(hit1.mean()),
        "hit@1_se": standard_error(hit1),
        "ndcg@10": float(ndcg10.mean()),
        "ndcg@10_se": standard_error(ndcg10),
    }


def positive_ranks(scores, block_items, positives):
    """0-based rank of each user's positive among its candidates: scores/block_items [U, C], positives [U]."""
    positive_score = scores.gather(1, (block_items == positives[:, None]).float().argmax(1, keepdim=True))  # [U, 1]
    return (scores > positive_score).sum(1)  # [U]


def rank_loader(model, loader):
    """Ranks of the positives of a RecBole sampled-evaluation loader (uniN), one per user."""
    ranks = []
    for interaction, _, positive_u, positive_i in loader:
        interaction = interaction.to(model.device)
        scores = model.predict(interaction)  # [R]
        users = interaction[model.USER_ID]
        n = len(users) // len(positive_u)
        ranks.append(
            positive_ranks(scores.view(-1, n), interaction[model.ITEM_ID].view(-1, n), positive_i.to(scores.device))
        )
    return torch.cat(ranks).tolist()


def training_probe(model, loader, n_users, n_candidates, seed):
    """Fixed candidate blocks for ``n_users`` training examples: an Interaction of [n_users * C] rows."""
    batches = list(loader)
    fields = (model.USER_ID, model.ITEM_SEQ, model.ITEM_SEQ_LEN, model.ITEM_ID)
    columns = {f: torch.cat([b[f] for b in batches])[:n_users] for f in fields}
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    saved, model.n_candidates = model.n_candidates, n_candidates
    candidates = model.training_candidates(columns[model.ITEM_SEQ], columns[model.ITEM_ID])  # [U, C]
    model.n_candidates = saved
    torch.random.set_rng_state(state)
    c = candidates.shape[1]
    rows = Interaction(
        {
            model.USER_ID: columns[model.USER_ID].repeat_interleave(c),
            model.ITEM_SEQ: columns[model.ITEM_SEQ].repeat_interleave(c, 0),
            model.ITEM_SEQ_LEN: columns[model.ITEM_SEQ_LEN].repeat_interleave(c),
            model.ITEM_ID: candidates.reshape(-1),
        }
    )
    return rows, candidates, columns[model.ITEM_ID]


def rank_probe(model, probe):
    rows, candidates, targets = probe
    scores = model.score_blocks(rows.to(model.device)).view(candidates.shape)
    return positive_ranks(scores, candidates.to(scores.device), targets.to(scores.device)).tolist()


def load_results(path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_results(path, results):
    atomic_write(str(path), lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1), encoding="utf-8"))


def text_chart(series, references, width=56, height=14, top=None):
    """A plain-text chart of hit@1 against training examples (log scale), readable in a terminal or a Markdown page
    code block: ``series`` {name: [(examples, hit@1)]} drawn with markers a, b, c ...; ``references``
    {name: hit@1} as horizontal lines of -, =, ~ ..."""
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points] + list(references.values())
    if not xs:
        return ""
    low, high = math.log10(min(xs)), math.log10(max(xs))
    top = top or max(0.1, math.ceil(max(ys) * 10 + 0.5) / 10)
    column = lambda x: round((math.log10(x) - low) / ((high - low) or 1) * (width - 1))  # noqa: E731
    row = lambda y: height - 1 - min(height - 1, max(0, round(y / top * (height - 1))))  # noqa: E731
    grid = [[" "] * width for _ in range(height)]
    legend = []
    for (name, value), line in zip(references.items(), "-=~.:"):
        for c in range(width):
            grid[row(value)][c] = line
        legend.append(f"{line * 3} {name}: {value:.3f}")
    for (name, points), marker in zip(series.items(), "abcdefghijklmnopqrstuvwxyz"):
        for x, y in points:
            cell = grid[row(y)][column(x)]
            grid[row(y)][column(x)] = "*" if cell.isalpha() and cell != marker else marker  # *: two series meet
        legend.append(f" {marker}  {name}: " + ", ".join(f"{y:.3f} at {x}" for x, y in points))
    lines = [f"{top - r * top / (height - 1):5.2f} |" + "".join(cells) for r, cells in enumerate(grid)]
    ticks = [" "] * width
    for x in sorted(set(xs)):
        label = str(x)
        start = min(column(x), width - len(label))
        ticks[start : start + len(label)] = label
    lines += [
        "      +" + "-" * width,
        "       " + "".join(ticks),
        "hit@1 against training examples (log scale; * = two series)",
    ]
    return "\n".join(lines + legend)


def draw(output, results):
    """curve.md (one row per label and point) and curve.png (hit@1 against training examples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "| label | examples | test hit@1 (± SE) | test ndcg@10 (± SE) | train-user hit@1 (± SE) | train s | "
        "test users |",
        "|---|---|---|---|---|---|---|",
    ]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    references = {}
    for index, (label, run) in enumerate(sorted(results.items())):
        points = sorted(run["points"].values(), key=lambda p: p["examples"])
        for p in points:
            t, u = p["test"], p["train_users"]
            lines.append(
                f"| {label} | {p['examples']} | {t['hit@1']:.3f} ± {t['hit@1_se']:.3f} | "
                f"{t['ndcg@10']:.3f} ± {t['ndcg@10_se']:.3f} | {u['hit@1']:.3f} ± {u['hit@1_se']:.3f} | "
                f"{p['train_seconds']:.0f} | {t['users']} |"
            )
        for key in ("backbone", "llm_only"):
            if run.get(key):
                references[run[key]["model"]] = run[key]
        if points:
            color = f"C{index}"
            x = [p["examples"] for p in points]
            axis.errorbar(
                x,
                [p["test"]["hit@1"] for p in points],
                yerr=[p["test"]["hit@1_se"] for p in points],
                color=color,
                marker="o",
                capsize=3,
                label=f"{label} (test)",
            )
            axis.plot(
                x,
                [p["train_users"]["hit@1"] for p in points],
                color=color,
                linestyle=":",
                marker="x",
                label=f"{label} (training users)",
            )
    for index, (name, reference) in enumerate(references.items()):
        axis.axhline(
            reference["hit@1"],
            color="black",
            linestyle=("--", "-.", ":")[index % 3],
            linewidth=1,
            label=f"{name}: {reference['hit@1']:.3f} (n={reference['users']})",
        )
        lines.append(
            f"| {name} | - | {reference['hit@1']:.3f} ± {reference['hit@1_se']:.3f} | "
            f"{reference['ndcg@10']:.3f} ± {reference['ndcg@10_se']:.3f} | - | - | {reference['users']} |"
        )
    chance = next((run["chance_hit@1"] for run in results.values() if run.get("chance_hit@1")), None)
    if chance:
        axis.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance: {chance:.3f}")
    axis.set_xscale("log")
    axis.set_xlabel("stage-2 training examples")
    axis.set_ylabel("hit@1 (error bars: ±1 SE)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    atomic_write(str(output / "curve.png"), lambda tmp: figure.savefig(tmp, dpi=120, format="png"))
    plt.close(figure)
    series = {
        label: [
            (p["examples"], p["test"]["hit@1"]) for p in sorted(run["points"].values(), key=lambda p: p["examples"])
        ]
        for label, run in sorted(results.items())
        if run["points"]
    }
    marks = {name: r["hit@1"] for name, r in references.items()}
    if chance:
        marks["chance"] = chance
    lines += ["", "```text", text_chart(series, marks), "```"]
    atomic_write(str(output / "curve.md"), lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8"))
    return "\n".join(lines)


def backbone_reference(model_class, config, overrides):
    """The CF backbone's ranks on this run's test users and candidates (None for models without one)."""
    if not needs_backbone(model_class):
        return None
    prepare_backbone(config, overrides)  # trains or reuses it; sets config["cf_checkpoint"]
    cf_model = config["cf_model"]
    cf_overrides = {k: v for k, v in overrides.items() if k not in ("model", "cf_checkpoint")}
    cf_config, _ = derive_config(config, cf_model, cf_overrides)  # the run's files, checked with the run's config
    init_seed(cf_config["seed"], cf_config["reproducibility"])
    _, train_data, _, test_data = prepare_data(cf_config)
    checkpoint = load_checkpoint(config["cf_checkpoint"], map_location=cf_config["device"])
    # the backbone's own hyper-parameters (a given cf_checkpoint may have been trained with other files), this run's
    # data, users and candidates
    cf = get_model_class(cf_model)(checkpoint["config"], train_data._dataset).to(cf_config["device"])
    restore(cf, checkpoint)
    cf.eval()
    with torch.no_grad():
        ranks = rank_loader(cf, test_data)
    return {"model": f"{cf_model} (backbone)", **metrics_from_ranks(ranks)}


def llm_only_reference(dataset, config_files):
    """LLMOnly (the frozen LLM, no CF knowledge, nothing trained) on the run's test users and candidates."""
    config, model_class = build_config("LLMOnly", dataset, config_files)
    init_seed(config["seed"], config["reproducibility"])
    _, train_data, _, test_data = prepare_data(config)
    model = model_class(config, train_data._dataset).to(config["device"])
    model.eval()
    return {"model": "LLMOnly", **metrics_from_ranks(rank_loader(model, test_data))}


def _last_stage(config, model_class):
    """Model, optimizer, loader and test data of a run whose earlier stages are trained (or reused) as in a normal
    run, ready to train its last stage step by step."""
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    _, train_data, _, test_data = prepare_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model = model_class(config, train_data._dataset).to(config["device"])
    trainer = StagedTrainer(config, model)
    stages = model.training_stages()
    for stage in stages[:-1]:
        trainer._fit_stage(stage, train_data, None, True, config["show_progress"], None)
    stage = stages[-1]
    init_seed(config["seed"] + stage.seed_offset, config["reproducibility"])
    trainer._reset_for(stage)
    return model, trainer.optimizer, model.stage_train_loader(stage, train_data), test_data


def _resume(model, optimizer, output, label, run_result):
    """(examples, training seconds) of the last finished point, its weights and optimizer state loaded; (0, 0.0)
    when nothing is finished."""
    finished = sorted(run_result["points"].values(), key=lambda p: p["examples"])
    weights_file = output / f"{label}.safetensors"
    if not (finished and weights_file.is_file()):
        return 0, 0.0
    model.load_trainable_state_dict(load_file(str(weights_file)))
    optimizer_file = output / f"{label}.optimizer.pt"
    if optimizer_file.is_file():
        optimizer.load_state_dict(torch.load(optimizer_file, weights_only=True))
    getLogger().info(f"learning curve {label}: resuming after {finished[-1]['examples']} examples")
    return finished[-1]["examples"], finished[-1]["train_seconds"]


def _evaluate_point(model, test_data, probe, done, train_seconds):
    """The figures of one point: test metrics, the training users' metrics, seconds and token counts."""
    model.eval()
    start = time.time()
    test = metrics_from_ranks(rank_loader(model, test_data))
    eval_seconds = time.time() - start
    return {
        "examples": done,
        "train_seconds": train_seconds,
        "test": test,
        "train_users": metrics_from_ranks(rank_probe(model, probe)),
        "test_eval_seconds_per_user": eval_seconds / max(test["users"], 1),
        **model.token_stats(),
    }


def _save_point(output, label, model, optimizer, results):
    """The weights and optimizer state after a point, and the results so far, each written whole."""
    weights = {k: v.detach().contiguous().cpu() for k, v in model.trainable_state_dict().items()}
    atomic_write(str(output / f"{label}.safetensors"), lambda tmp: save_file(weights, tmp))
    atomic_write(str(output / f"{label}.optimizer.pt"), lambda tmp: torch.save(optimizer.state_dict(), tmp))
    write_results(output / "curve.json", results)


def run(
    model_name,
    dataset,
    config_files,
    overrides,
    points,
    label,
    output,
    train_users,
    probe_seed=2025,
    with_llm_only=False,
):
    output.mkdir(parents=True, exist_ok=True)
    results = load_results(output / "curve.json")
    config, model_class = build_config(model_name, dataset, config_files)
    backbone = backbone_reference(model_class, config, {})
    model, optimizer, loader, test_data = _last_stage(config, model_class)
    logger = getLogger()
    shown = model.n_candidates if model.eval_negatives is None else model.eval_negatives + 1
    probe = training_probe(model, loader, train_users, shown, probe_seed)

    run_result = results.setdefault(
        label, {"model": model_name, "dataset": dataset, "overrides": overrides, "points": {}}
    )
    run_result["backbone"] = backbone
    if with_llm_only and not run_result.get("llm_only"):
        run_result["llm_only"] = llm_only_reference(dataset, config_files)
        write_results(output / "curve.json", results)
    if model.eval_negatives:
        run_result["chance_hit@1"] = 1.0 / (model.eval_negatives + 1)
    done, train_seconds = _resume(model, optimizer, output, label, run_result)
    seen = 0
    todo = [p for p in points if p > done]
    progress = tqdm(
        total=max(todo, default=done),
        initial=done,
        desc=f"{label}: stage-2 examples",
        disable=not config["show_progress"],
    )
    while todo:
        for batch in loader:
            if seen < done:  # replaying the data order up to the resumed point (no training)
                seen += len(batch)
                continue
            model.train()
            start = time.time()
            loss = model.total_loss(model.calculate_loss(batch.to(model.device)))  # parts: LLM objective, auxiliary
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train_seconds += time.time() - start
            seen += len(batch)
            done = seen
            progress.update(len(batch))
            progress.set_postfix(loss=loss.item())
            if done % 50 < len(batch):
                logger.info(f"learning curve {label}: {done} examples, loss {loss.item():.4f}, {train_seconds:.0f} s")
            if done >= todo[0]:
                point = _evaluate_point(model, test_data, probe, done, train_seconds)
                run_result["points"][str(done)] = point
                _save_point(output, label, model, optimizer, results)
                logger.info(f"learning curve {label} @ {done} examples: {json.dumps(point)}")
                todo = [p for p in todo if p > done]
                if not todo:
                    break
    progress.close()
    table = draw(output, results)
    print(table)
    return results


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ALLMRec")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--config_files", default="")
    parser.add_argument("--points", default="100,300,1000", help="cumulative training examples to evaluate at")
    parser.add_argument("--label", required=True, help="name of this configuration in the table and chart")
    parser.add_argument("--output", default="results/learning-curve")
    parser.add_argument("--train_users", type=int, default=100, help="training examples scored at each point")
    parser.add_argument("--with_llm_only", action="store_true", help="also score LLMOnly on the same test users")
    args, rest = parser.parse_known_args(argv)
    # RecBole's Config reads --key=value properties from sys.argv itself: leave it only those
    sys.argv = sys.argv[:1] + rest
    overrides = dict(arg[2:].split("=", 1) for arg in rest if arg.startswith("--") and "=" in arg)  # the record only
    try:
        points = sorted(int(p) for p in args.points.split(","))
    except ValueError:
        raise ConfigValueError(f"--points={args.points}: give training-example counts, e.g. 100,300,1000") from None
    run(
        args.model,
        args.dataset,
        args.config_files.split() if args.config_files else [],
        overrides,
        points,
        args.label,
        Path(args.output),
        args.train_users,
        with_llm_only=args.with_llm_only,
    )


if __name__ == "__main__":
    sys.exit(main())
