"""Command line: RecBole's run_recbole.py flags, for plugin and RecBole models alike."""

import argparse
import os
import sys
import time
from pathlib import Path

INTERRUPTED = (
    "interrupted: every finished epoch of a plugin stage is saved (nothing half-written); run the same command "
    "again to resume from there"
)


def _one_line_errors(call, *args):
    """(None, call(*args)); or (2, None) after one ``error:`` line for a plugin error, (130, None) after Ctrl-C."""
    from recbole_llmplugin.utils.errors import PluginError

    try:
        return None, call(*args)
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2, None
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130, None


USAGE = """run_recbole_llm.py trains and evaluates a plugin model (LLMOnly, ALLMRec, MLPLLM, TALLRec, UniSRec) or any
RecBole model through RecBole's loop, and prints a table with standard errors.

  the README's main job (A-LLMRec beside its SASRec backbone on ml-100k, about 5 minutes on 2 CPU cores):
    python run_recbole_llm.py --model=ALLMRec --dataset=ml-100k --config_files={quick}
  any model on its own defaults (paper-sized: hours on a CPU; its first lines give the plan and the time):
    python run_recbole_llm.py --model=ALLMRec --dataset=ml-100k
  models side by side, or a benchmark of models x datasets x seeds:
    python run_recbole_llm.py --model=SASRec,ALLMRec --dataset=ml-100k --config_files={quick}
    python run_recbole_llm.py --benchmark={benchmark}
  every flag: python run_recbole_llm.py --help"""


def usage():
    """The usage text, with the paths of the shipped profiles as seen from the working folder."""
    from recbole_llmplugin.config.paths import profiles_dir

    root = profiles_dir()
    shown = {}
    for key, name in (("quick", "quick-ml100k.yaml"), ("benchmark", "quick-benchmark-ml100k.yaml")):
        if root is None:  # installed without its checkout: the profiles are the repository's
            shown[key] = f"properties/benchmark/{name} (a file of the repository's checkout)"
            continue
        path = str(root / "benchmark" / name)
        relative = os.path.relpath(path)
        shown[key] = relative if not relative.startswith("..") else path
    return USAGE.format(**shown)


def main(argv=None):
    given = sys.argv[1:] if argv is None else argv
    if not given:  # the bare command: what to run, not an error
        print(usage())
        return 0
    parser = argparse.ArgumentParser(
        prog="run_recbole_llm.py",
        description="Train and evaluate a plugin or RecBole model; any other --key=value is a RecBole property.",
    )
    parser.add_argument(
        "--model",
        "-m",
        type=str,
        default="LLMOnly",
        help="plugin or RecBole model name; a comma-separated list compares models",
    )
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name")
    parser.add_argument("--config_files", type=str, default=None, help="space-separated YAML property files")
    parser.add_argument("--benchmark", type=str, default=None, help="benchmark YAML: models x datasets x seeds")
    # RecBole's run_recbole.py launch flags (data-parallel: one process per GPU, or per CPU share with gloo)
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine (data-parallel)")
    parser.add_argument("--ip", type=str, default="localhost", help="address of the main process (several machines)")
    parser.add_argument("--port", type=str, default="5678", help="port of the main process")
    parser.add_argument("--world_size", type=int, default=-1, help="processes on all machines (default: nproc)")
    parser.add_argument("--group_offset", type=int, default=0, help="global rank of this machine's first process")
    args, _ = parser.parse_known_args(argv)
    from recbole_llmplugin.utils.errors import PluginError
    from recbole_llmplugin.config.validation import check_command_line
    from recbole_llmplugin.utils.logs import early_log

    try:  # RecBole's Config reads the --key=value arguments itself
        check_command_line(sys.argv[1:] if argv is None else argv)
        launch = launch_keys(args)
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.benchmark and launch:
        print("error: --benchmark runs one process; drop --nproc / --world_size (or torchrun)", file=sys.stderr)
        return 2
    if args.benchmark:
        from recbole_llmplugin.tools.benchmark import run_benchmark

        overrides = command_line_properties(given)  # e.g. --benchmark_datasets=[my-set]: over the file's
        with early_log():
            code, rows = _one_line_errors(run_benchmark, args.benchmark, None, overrides)
        return code if code is not None else (0 if all(r["failed"] == 0 for r in rows) else 1)

    from recbole_llmplugin.utils.distributed import run_launched

    config_files = args.config_files.strip().split(" ") if args.config_files else None
    models = [name for name in args.model.split(",") if name]
    if not models:
        print("error: --model is empty; name a plugin or RecBole model (e.g. --model=ALLMRec)", file=sys.stderr)
        return 2
    if launch:
        from recbole_llmplugin.utils.registry import is_plugin_model

        recbole_models = [name for name in models if not is_plugin_model(name)]
        if recbole_models:  # RecBole shards their training data: other batches, other metrics than one process
            print(
                f"error: --nproc / torchrun runs plugin models only; {recbole_models[0]} would train on per-process "
                f"shards (RecBole's DDP) and measure otherwise than in one process: run it without --nproc",
                file=sys.stderr,
            )
            return 2
    # a model failing in one process of a data-parallel run would leave the others waiting: the run stops instead
    output = result_folder(args.dataset)
    run = (models, args.dataset, config_files, len(models) > 1 and not launch, output)
    with early_log():  # lines before the first model's log opens reach the console, then that log
        code, results = _one_line_errors(run_launched, _run_models, run, args.nproc, launch)
    if code is not None:
        return code
    if results is None:  # not the main process of a data-parallel run: it prints nothing
        return 0
    print_summary(results, summary_reference(models, results), output)
    return 0 if all("error" not in r for r in results) else 1


def summary_reference(models, results):
    """The paired table's reference row: the first model of a comparison; a one-model run's first row (the CF
    backbone it reads, when it has one)."""
    if len(models) > 1 or not results:
        return models[0]
    return results[0].get("label") or models[0]


def print_summary(results, reference, output):
    """The end of a plain run: the table (the metrics chosen by table_metrics; every one in ``table.md``), the paired
    differences to the first model, and three lines naming the result files, the checkpoints and the logs."""
    from recbole_llmplugin.quick_start.compare import comparison_table, console_table, where_lines
    from recbole_llmplugin.tools.compare import paired_markdown, paired_rows
    from recbole_llmplugin.utils.files import atomic_write

    users = sorted({r["costs"]["test_users"] for r in results if "costs" in r})
    chosen = next((r["table_metrics"] for r in results if r.get("table_metrics")), None)
    print(
        f"\nTest results, {'/'.join(map(str, users)) or '?'} test users (± = standard error over the n users; "
        f"'Model (...)' is that model in the form named):\n"
    )
    print(console_table(results, chosen))
    paired = paired_rows(results, reference)
    text = comparison_table(results)
    if len(paired) > 1:
        print("\n" + paired_markdown(paired))
        text += "\n\nPaired differences to " + reference + ":\n\n" + paired_markdown(paired)
    if os.path.isdir(output):
        atomic_write(os.path.join(output, "table.md"), lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
        print()
        print("\n".join(where_lines(results, output)))


LAUNCH_FLAGS = {"model", "m", "dataset", "d", "config_files", "benchmark", "nproc", "ip", "port", "world_size"}
LAUNCH_FLAGS |= {"group_offset"}


def command_line_properties(argv):
    """The ``--key=value`` properties of a command line (values read as YAML, as in a property file), without this
    command's own flags: a benchmark takes them over its file's keys (``benchmark_datasets`` included)."""
    import yaml

    properties = {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            continue
        key, _, value = arg[2:].partition("=")
        if key in LAUNCH_FLAGS:
            continue
        try:
            properties[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            properties[key] = value
    return properties


def result_folder(dataset):
    """Where a plain run writes its run files: ``results/<dataset>-<date>-<time>-<pid>`` (relative to the working
    folder, beside RecBole's ``log/`` and ``saved/``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("results", f"{dataset}-{stamp}-{os.getpid()}")


def launch_keys(args):
    """RecBole's launch keys of a data-parallel run: from torchrun's environment (with local_rank), from
    ``--nproc`` / ``--world_size`` (without: the processes are spawned here), or {} for one process."""
    from recbole_llmplugin.utils.distributed import torchrun_keys

    keys = torchrun_keys()
    if keys:
        return keys
    if args.nproc < 1:
        from recbole_llmplugin.utils.errors import ConfigValueError

        raise ConfigValueError(f"--nproc={args.nproc}; give 1 or more processes")
    if args.nproc <= 1 and args.world_size <= 0:
        return {}
    world = args.world_size if args.world_size > 0 else args.nproc
    return {"world_size": world, "nproc": args.nproc, "offset": args.group_offset, "ip": args.ip, "port": args.port}


def _run_models(models, dataset, config_files, isolate_failures, output, launch=None):
    """The comparison's rows (every process runs it; only the main process's rows are returned, and only it writes
    the run files)."""
    from recbole_llmplugin.quick_start.compare import run_models
    from recbole_llmplugin.utils.distributed import is_main

    results = run_models(
        models, dataset, config_files, config_dict=launch, isolate_failures=isolate_failures, output=output
    )
    return results if is_main() else None
