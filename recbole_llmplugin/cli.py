"""Command line: RecBole's run_recbole.py flags, for plugin and RecBole models alike."""

import argparse
import sys

INTERRUPTED = (
    "interrupted: every finished epoch of a plugin stage is saved (nothing half-written); run the same command "
    "again to resume from there"
)


def main(argv=None):
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
    args, _ = parser.parse_known_args(argv)
    if args.benchmark:
        from recbole_llmplugin import PluginError
        from recbole_llmplugin.benchmark import run_benchmark

        try:
            rows = run_benchmark(args.benchmark)
        except PluginError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            return 130
        return 0 if all(r["failed"] == 0 for r in rows) else 1

    from recbole_llmplugin import PluginError
    from recbole_llmplugin.compare import comparison_table, run_models

    config_files = args.config_files.strip().split(" ") if args.config_files else None
    models = [name for name in args.model.split(",") if name]
    try:
        results = run_models(models, args.dataset, config_files, isolate_failures=len(models) > 1)
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    users = sorted({r["costs"]["test_users"] for r in results if "costs" in r})
    print(
        f"\nTest results on {args.dataset}, {'/'.join(map(str, users)) or '?'} test users "
        f"(same properties, same users and, with eval_candidates: fixed, same candidates for every model):\n"
    )
    print(comparison_table(results))
    return 0 if all("error" not in r for r in results) else 1
