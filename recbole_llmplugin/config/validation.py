"""Property validation before any work: the user's YAML files, every plugin key's type and range, and
misspelt keys. Each problem is one ``ConfigValueError`` line naming the key, the value and the fix.

The types, ranges and choices are the table's (``config.properties``); RecBole's own keys are RecBole's to check,
except the few whose bad values RecBole accepts silently (the table's RecBole keys with a checked rule).
"""

import ast
import difflib
import functools
import glob
import os
import string
from logging import getLogger

import recbole
import yaml

from recbole_llmplugin.utils.errors import ConfigValueError
from recbole_llmplugin.config.identity import RUN_LOCAL_KEYS
from recbole_llmplugin.config.properties import PROPERTIES, model_keys, model_only_keys, rules

# the checked rules of the table (config.properties): the plugin's keys, and RecBole's whose bad values RecBole
# runs with (or fails on late, with a traceback)
RULES = rules()


def read_yaml_file(path, loader=yaml.FullLoader):
    """The dict of one property file; a missing or unparsable file is one line naming it."""
    if os.path.isdir(path):
        raise ConfigValueError(f"config file '{path}' is a folder; give the YAML files in it, space-separated")
    if not os.path.isfile(path):
        raise ConfigValueError(f"config file '{path}' does not exist; check --config_files")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.load(handle.read(), Loader=loader)
    except UnicodeDecodeError as error:
        raise ConfigValueError(f"config file '{path}' is not UTF-8 text ({error.reason}); save it as UTF-8") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigValueError(f"config file '{path}'{where}: YAML does not parse ({problem}); fix that line") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigValueError(f"config file '{path}' holds a {type(data).__name__}, not 'key: value' lines")
    return data


def check_command_line(args):
    """The ``--key=value`` arguments as RecBole's Config reads them from the command line: a key given twice with
    two values (RecBole raises a SyntaxError), a value with '=' in it (RecBole drops the argument in silence) and
    a list or dict cut short by an unquoted space (RecBole keeps the piece as a string, which fails later; a text
    such as a prompt template may start with a brace: it is cut only when a piece without -- follows)."""
    given = {}
    for index, arg in enumerate(args):
        if not arg.startswith("--") or "=" not in arg:
            continue
        key, _, value = arg[2:].partition("=")
        if "=" in value:
            raise ConfigValueError(
                f"--{key}: the value '{value}' holds '=', which RecBole's command line cannot take; put {key} in a "
                f"YAML file given with --config_files"
            )
        if key in given and given[key] != value:
            raise ConfigValueError(f"--{key} is given twice ({given[key]}, then {value}); give it once")
        given[key] = value
        rest = args[index + 1] if index + 1 < len(args) else "-"
        if value[:1] and value[0] in "[{(" and not rest.startswith("-"):  # the next argument is its other half
            try:
                ast.literal_eval(value)
            except SyntaxError:
                raise ConfigValueError(
                    f"--{key}={value} is cut short (a space in it splits the argument?); quote the whole argument, "
                    f"e.g. \"--{key}={{'inter': ['user_id', 'item_id']}}\", or put {key} in a YAML file"
                ) from None
            except ValueError:  # names (RecBole keeps such a value as a string)
                pass
    for index, arg in enumerate(args):  # RecBole reads only --key=value: a piece on its own is dropped in silence
        before = args[index - 1] if index else ""
        if arg.startswith("-") or (before.startswith("-") and "=" not in before):  # a flag, or a flag's value
            continue
        if before.startswith("--config_files="):
            raise ConfigValueError(
                f"'{arg}' stands apart from {before}: quote several property files as one argument, "
                f'--config_files="{before.partition("=")[2]} {arg}"'
            )
        raise ConfigValueError(
            f"'{arg}' is not a --key=value argument (RecBole would drop it); write --key=value, and quote a value "
            f"with spaces"
        )


def check_user_files(config_file_list):
    """Every user property file exists and parses, before RecBole reads it."""
    for path in config_file_list or []:
        read_yaml_file(path)


def yaml_keys(paths):
    keys = set()
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                keys |= set((yaml.safe_load(handle) or {}).keys())
        except (OSError, yaml.YAMLError):
            continue
    return keys


@functools.lru_cache(maxsize=None)
def recbole_keys():
    """Every key a property file of RecBole defines (read once per process)."""
    recbole_root = os.path.join(os.path.dirname(recbole.__file__), "properties")
    declared = {name for name, prop in PROPERTIES.items() if prop.recbole}
    return yaml_keys(glob.glob(os.path.join(recbole_root, "**", "*.yaml"), recursive=True)) | declared


@functools.lru_cache(maxsize=None)
def known_keys():
    """Every key RecBole's property files or the plugin's table define; read once."""
    return recbole_keys() | set(PROPERTIES) | _RUNTIME_KEYS


# keys read from the command line or set by RecBole / the plugin at run time, found in no property file
_RUNTIME_KEYS = {"model", "dataset", "cross_domain_source"} | RUN_LOCAL_KEYS


def user_keys(config):
    """Keys the user set: command line, config_dict and their own files (not the plugin's defaults)."""
    return set(config.cmd_config_dict) | set(config.variable_config_dict) | set(getattr(config, "_user_file_keys", ()))


# name prefixes of the plugin's keys: an unknown key with one of them is a mistake, not a key of the user's own
PLUGIN_PREFIXES = (
    "llm_",
    "stage1_",
    "stage2_",
    "prompt_",
    "allmrec_",
    "eval_",
    "item_text_",
    "text_encoder",
    "lora_",
    "cf_",
)


def check_unknown_keys(keys, known=None):
    """Keys no property file defines. One close to a key that exists is a misspelling, and one in the plugin's
    namespaces (``PLUGIN_PREFIXES``) cannot be anything else: each is one line naming the nearest key. The others
    are returned: RecBole users pass keys of their own, which the caller warns about."""
    known = known or known_keys()
    others = []
    for key in sorted(keys):
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if close:
            raise ConfigValueError(f"unknown property '{key}': did you mean '{close[0]}'?")
        if key.startswith(PLUGIN_PREFIXES):
            raise ConfigValueError(
                f"unknown property '{key}': no RecBole or plugin property has that name; the nearest is "
                f"'{nearest_key(key, known)}'"
            )
        others.append(key)
    return others


def nearest_key(key, known):
    """The known key nearest to ``key``: one of its namespace whose words' initials spell the rest of ``key``
    (``stage2_lr`` -> ``stage2_learning_rate``), else the most similar one of that namespace (or of all keys)."""
    prefix = next((p for p in PLUGIN_PREFIXES if key.startswith(p)), "")
    same = sorted(k for k in known if k.startswith(prefix)) or sorted(known)
    rest = key[len(prefix) :].replace("_", "")
    for candidate in same:
        if rest and "".join(word[0] for word in candidate[len(prefix) :].split("_") if word) == rest:
            return candidate
    return difflib.get_close_matches(key, same, n=1, cutoff=0.0)[0]


def check_values(config, keys=None):
    """Type and range of every checked key of the table (the plugin's, and RecBole's that RecBole accepts bad
    values of) in the resolved config."""
    for key, rule in RULES.items():
        if keys is not None and key not in keys:
            continue
        if key not in config.final_config_dict:
            continue
        value = config[key]
        problem = rule.problem(value)
        if problem:
            raise ConfigValueError(f"{key}: {value!r} {problem}")


def unused_user_keys(config, model_name, plugin_model):
    """Keys the user set that belong to another plugin model's file and not to this one: ignored by this run."""
    if not plugin_model:
        return []
    others = model_only_keys() - recbole_keys()
    return sorted((user_keys(config) & others) - model_keys(model_name))


def validate(config, model_name, plugin_model):
    """All config-time checks of one run; returns the user-set keys this model ignores (to be logged)."""
    own = check_unknown_keys(user_keys(config))
    if own:
        getLogger().warning(
            f"{', '.join(own)}: no RecBole or plugin property has that name; passed on unread (check the spelling, "
            f"or ignore this for keys your own code reads)"
        )
    check_values(config)
    check_valid_metric(config)
    check_table_metrics(config)
    if plugin_model:
        check_templates(config)
    return unused_user_keys(config, model_name, plugin_model)


def unknown_metric(error):
    """One line for a metric RecBole does not have, from its Config's NotImplementedError ("There is no metric
    named 'Foo'"), with the nearest it has."""
    from recbole.evaluator.register import metrics_dict

    quoted = str(error).split("'")
    name = quoted[1] if len(quoted) >= 3 else str(error)
    nearest = difflib.get_close_matches(str(name).lower(), list(metrics_dict), n=1)
    hint = f" (did you mean '{nearest[0]}'?)" if nearest else ""
    return ConfigValueError(
        f"metrics: '{name}' is not a RecBole metric{hint}; RecBole has {', '.join(sorted(metrics_dict))}"
    )


def check_table_metrics(config):
    """Each ``table_metrics`` entry is a measured metric@k (a column that would stay empty otherwise)."""
    topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
    measured = {f"{str(m).lower()}@{k}" for m in config["metrics"] or [] for k in topk}
    for entry in config["table_metrics"] or []:
        if str(entry).lower() not in measured:
            raise ConfigValueError(
                f"table_metrics: '{entry}' is not measured; choose among {', '.join(sorted(measured))} (metrics x topk)"
            )


def check_valid_metric(config):
    """``valid_metric`` is one of the metrics computed (RecBole fails with ``KeyError: 'mrr@10'`` after the first
    training epoch otherwise)."""
    valid = str(config["valid_metric"] or "")
    name, _, k = valid.lower().partition("@")
    metrics = [str(m).lower() for m in (config["metrics"] or [])]
    topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
    if name not in metrics:
        raise ConfigValueError(
            f"valid_metric: {valid} is not among metrics {config['metrics']}; add {valid.split('@')[0]} to metrics or set valid_metric "
            f"to one of them"
        )
    if k and (not k.isdigit() or int(k) not in topk):
        raise ConfigValueError(f"valid_metric: {valid} asks for @{k}, topk is {config['topk']}; add {k} to topk")


# the placeholders each prompt key may hold (prompts.PromptBuilder fills them)
TEMPLATE_FIELDS = {
    "prompt_template": {"user_token", "history", "candidates"},
    "prompt_history_item": {"title", "item_token"},
    "prompt_candidate_item": {"title", "item_token"},
    "prompt_index_item": {"title", "item_token", "label"},
    "prompt_answer": {"title", "item_token"},
}


def check_templates(config):
    """Each prompt template holds only its own placeholders, and the prompt one user token at most: one line naming
    the key, before any training."""
    for key, allowed in TEMPLATE_FIELDS.items():
        template = config[key]
        if not isinstance(template, str):
            continue
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        except ValueError as error:
            raise ConfigValueError(
                f"{key}: '{template}' is not a valid template ({error}); write {{{{ for a brace"
            ) from None
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise ConfigValueError(
                f"{key}: '{template}' has {{{unknown[0]}}}, which is not one of "
                f"{', '.join('{' + f + '}' for f in sorted(allowed))}; write {{{{ and }}}} for literal braces"
            )
        if key == "prompt_template" and fields.count("user_token") > 1:
            raise ConfigValueError(
                f"{key}: '{template}' has {{user_token}} {fields.count('user_token')} times; keep one"
            )
