"""Command line: RecBole's run_recbole.py flags, for plugin and RecBole models alike."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="run_recbole_llm.py",
        description="Train and evaluate a plugin or RecBole model; any other --key=value is a RecBole property.",
    )
    parser.add_argument("--model", "-m", type=str, default="LLMOnly", help="plugin or RecBole model name")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name")
    parser.add_argument("--config_files", type=str, default=None, help="space-separated YAML property files")
    args, _ = parser.parse_known_args(argv)

    from recbole_llmplugin import PluginError, run_recbole_llm

    config_files = args.config_files.strip().split(" ") if args.config_files else None
    try:
        run_recbole_llm(model=args.model, dataset=args.dataset, config_file_list=config_files)
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
