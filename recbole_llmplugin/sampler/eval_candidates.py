"""Evaluation candidates shared by every model of a comparison.

RecBole's sampled evaluation (``mode: uniN``) re-draws negatives on every pass, with replacement,
possibly from the user's own history, so two models never rank the same lists. With
``eval_candidates: fixed`` each user's N negatives per phase are drawn once (own seed, without
replacement, never an item of the user's whole history), saved to a file keyed by the dataset's
content, and served to RecBole's loaders by a sampler stand-in -- for plugin and RecBole models alike.

``eval_user_sample: K`` evaluates on a seeded sample of K users (quick profiles); every model run
with the same value and seed sees the same users.
"""

import hashlib
import os
import zipfile
import zlib
from logging import getLogger

import numpy as np
import torch
from recbole.data import get_dataloader
from recbole.data.dataloader import NegSampleEvalDataLoader
from recbole.utils import set_color

from recbole_llmplugin.utils.distributed import main_first
from recbole_llmplugin.utils.errors import ConfigValueError
from recbole_llmplugin.config.properties import choices
from recbole_llmplugin.utils.files import atomic_write, set_aside, short_reason

PHASES = ("valid", "test")


def _column(dataset, field):
    return np.asarray(dataset.inter_feat[field])  # a DataFrame before build(), an Interaction after


class CandidateSource:
    """What fixed candidates are drawn from, taken from the dataset BEFORE RecBole's build(): the
    build replaces ``inter_feat`` (sequential models keep only augmented targets, dropping each
    user's first item), which would change both the histories and the file key per model type."""

    def __init__(self, dataset):
        self.fingerprint = dataset_fingerprint(dataset)
        self.histories = _user_histories(dataset)


def dataset_fingerprint(dataset):
    """Short hash of the interactions' raw (user, item) tokens: same data, same candidate file."""
    uid, iid = dataset.uid_field, dataset.iid_field
    users = dataset.id2token(uid, _column(dataset, uid))
    items = dataset.id2token(iid, _column(dataset, iid))
    pairs = np.sort(np.char.add(np.char.add(users.astype(str), "\x1f"), items.astype(str)))
    digest = hashlib.sha1()
    digest.update(str(dataset.item_num).encode())
    digest.update("\x1e".join(pairs.tolist()).encode("utf-8"))
    return digest.hexdigest()[:12]


def _user_histories(dataset):
    """Internal item ids of each user's whole history (all splits), as a list of sorted arrays."""
    uid = _column(dataset, dataset.uid_field).astype(np.int64)
    iid = _column(dataset, dataset.iid_field).astype(np.int64)
    order = np.lexsort((iid, uid))
    uid, iid = uid[order], iid[order]
    bounds = np.searchsorted(uid, np.arange(dataset.user_num + 1))
    return [iid[bounds[u] : bounds[u + 1]] for u in range(dataset.user_num)]


def draw_candidates(dataset, n_neg, seed, histories):
    """Per phase, an int64 array [user_num, n_neg] of distinct negatives outside each user's history.

    Row 0 (padding) and users without interactions are -1.
    """
    n_items = dataset.item_num  # ids 1..n_items-1 are real items
    tables = {}
    for phase_index, phase in enumerate(PHASES):
        rng = np.random.default_rng([seed, phase_index])
        table = np.full((dataset.user_num, n_neg), -1, dtype=np.int64)
        for user in range(1, dataset.user_num):
            history = histories[user]
            if len(history) == 0:
                continue
            available = n_items - 1 - len(np.unique(history))
            if available < n_neg:
                raise ConfigValueError(
                    f"eval_candidates: fixed needs {n_neg} unseen items per user but user "
                    f"{dataset.id2token(dataset.uid_field, user)} has only {available}; lower the N of mode uniN"
                )
            chosen = np.empty(0, dtype=np.int64)
            while len(chosen) < n_neg:
                draw = rng.integers(1, n_items, size=2 * (n_neg + len(history)) + 8)
                draw = draw[~np.isin(draw, history)]
                chosen = np.concatenate([chosen, draw])
                _, first = np.unique(chosen, return_index=True)
                chosen = chosen[np.sort(first)]
            table[user] = chosen[:n_neg]
        tables[phase] = table
    return tables


def candidate_file(config, source, n_neg, seed):
    explicit = config["eval_candidates_file"]
    if explicit:
        return explicit
    name = f"{config['dataset']}-uni{n_neg}-seed{seed}-{source.fingerprint}.npz"
    return os.path.join(config["checkpoint_dir"], "eval_candidates", name)


def _save_arrays(path, arrays):
    def write(tmp):
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    atomic_write(path, write)


def load_or_draw(config, dataset, n_neg, source):
    """Internal-id candidate tables per phase, from the candidate file or drawn and saved there (by the main
    process of a data-parallel run; the others read its file)."""
    with main_first():
        return _load_or_draw(config, dataset, n_neg, source)


def _load_or_draw(config, dataset, n_neg, source):
    logger = getLogger()
    seed = config["eval_candidates_seed"]
    path = candidate_file(config, source, n_neg, seed)
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    stored = _read_candidate_file(path, bool(config["eval_candidates_file"])) if os.path.isfile(path) else None
    if stored is not None:
        recorded = str(stored["data_fingerprint"]) if "data_fingerprint" in stored else None
        if recorded is not None and recorded != source.fingerprint:
            raise ConfigValueError(
                f"eval_candidates_file '{path}' was drawn for other interactions (data hash {recorded}, this data "
                f"{source.fingerprint}): its negatives could be items the users interacted with; remove the setting "
                f"or the file to draw new ones"
            )
        if recorded is None:
            logger.warning(
                f"eval_candidates_file '{path}' records no data hash: it cannot be checked against this data"
            )
        if int(stored["n_neg"]) != n_neg:
            raise ConfigValueError(
                f"eval_candidates_file '{path}' holds {int(stored['n_neg'])} negatives per user, the run asks "
                f"for {n_neg}; use mode uni{int(stored['n_neg'])} or another file"
            )
        token2uid, token2iid = dataset.field2token_id[uid_field], dataset.field2token_id[iid_field]
        tables = {}
        for phase in PHASES:
            table = np.full((dataset.user_num, n_neg), -1, dtype=np.int64)
            users = stored["user_tokens"]
            items = stored[f"{phase}_item_tokens"]
            try:
                rows = np.array([token2uid[u] for u in users.tolist()], dtype=np.int64)
                table[rows] = np.vectorize(token2iid.__getitem__, otypes=[np.int64])(items)
            except KeyError as missing:
                raise ConfigValueError(
                    f"eval_candidates_file '{path}' names {missing} which this dataset lacks; it was made for other data"
                ) from None
            tables[phase] = table
        logger.info(set_color("eval candidates", "green") + f": loaded fixed candidates from {path}")
        return tables

    tables = draw_candidates(dataset, n_neg, seed, source.histories)
    users = np.nonzero(tables["test"][:, 0] >= 0)[0]
    arrays = {
        "n_neg": np.array(n_neg),
        "seed": np.array(seed),
        "data_fingerprint": np.array(source.fingerprint),
        "user_tokens": dataset.id2token(uid_field, users).astype(str),
    }
    for phase in PHASES:
        arrays[f"{phase}_item_tokens"] = dataset.id2token(iid_field, tables[phase][users]).astype(str)
    _save_arrays(path, arrays)
    logger.info(set_color("eval candidates", "green") + f": drew fixed candidates (seed {seed}) into {path}")
    return tables


CANDIDATE_KEYS = ("n_neg", "user_tokens", *(f"{phase}_item_tokens" for phase in PHASES))


def _read_candidate_file(path, given):
    """The arrays of a candidate file. An unreadable one (truncated, or not the plugin's) is one line naming it
    when the user gave it (``eval_candidates_file``); the plugin's own cache file is moved aside and drawn anew
    (``None``)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        missing = [key for key in CANDIDATE_KEYS if key not in arrays]
        if missing:
            raise KeyError(f"no {', '.join(missing)}")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        reason = "not an .npz archive" if isinstance(error, (zipfile.BadZipFile, ValueError)) else short_reason(error)
        if given:
            raise ConfigValueError(
                f"eval_candidates_file '{path}' is not a candidate file the plugin wrote ({reason}); give one it "
                f"wrote, or remove the setting to draw the candidates into the default file"
            ) from None
        set_aside(path, "candidate file", reason)
        return None
    return arrays


class FixedCandidateSampler:
    """Stands in for a RecBole sampler in an evaluation loader: returns the fixed negatives."""

    def __init__(self, sampler, table):
        self._sampler = sampler
        self.table = table

    def __getattr__(self, name):
        if name == "_sampler":  # not set yet: an instance being unpickled (saved loaders, save_dataloaders)
            raise AttributeError(name)
        return getattr(self._sampler, name)

    def sample_by_user_ids(self, user_ids, item_ids, num):
        user_ids = np.asarray(user_ids)
        if num != self.table.shape[1]:
            raise ConfigValueError(f"fixed candidates hold {self.table.shape[1]} negatives per user, asked for {num}")
        negatives = self.table[user_ids]  # [n, num]
        if (negatives < 0).any():
            raise ConfigValueError(
                "a user without fixed candidates reached evaluation; delete the eval_candidates file"
            )
        # RecBole's layout: value[k * n + j] is the k-th negative for user_ids[j]
        return torch.from_numpy(np.ascontiguousarray(negatives.T).reshape(-1))


def check_enough_negatives(dataset, valid_data, test_data):
    """RecBole's uniN sampler with fewer than N unseen items for some user: it would loop or repeat items."""
    for loader in (valid_data, test_data):
        if not isinstance(loader, NegSampleEvalDataLoader) or loader.neg_sample_args["distribution"] == "none":
            continue
        n_neg = loader.neg_sample_args["sample_num"]
        uid = _column(dataset, dataset.uid_field).astype(np.int64)
        iid = _column(dataset, dataset.iid_field).astype(np.int64)
        seen = np.bincount(np.unique(uid * dataset.item_num + iid) // dataset.item_num, minlength=dataset.user_num)
        short = int((dataset.item_num - 1 - seen[seen > 0] < n_neg).sum())
        if short:
            raise ConfigValueError(
                f"eval_args mode uni{n_neg}: {short} users have fewer than {n_neg} items they never interacted with "
                f"({dataset.item_num - 1} items in all); lower N"
            )
        return


def _sampled_phases(config):
    """The evaluation phases whose RecBole loader draws negatives (``eval_args.mode: uniN``, not full ranking); uni0
    ranks the target alone (RecBole's sampler and metrics then fail): one line."""
    sampled = []
    for phase in PHASES:
        args = config[f"{phase}_neg_sample_args"]
        if not issubclass(get_dataloader(config, phase), NegSampleEvalDataLoader) or args["distribution"] == "none":
            continue
        if args.get("sample_num", 1) < 1:
            raise ConfigValueError(
                f"eval_args mode uni{args['sample_num']} ranks each user's target alone; give N >= 1 (e.g. uni19)"
            )
        sampled.append(phase)
    return sampled


def fixed_candidate_samplers(config, dataset, samplers, source):
    """RecBole's (train, valid, test) samplers (``create_samplers``), the sampled evaluation phases' serving the
    fixed candidates when ``eval_candidates: fixed`` (``FixedCandidateSampler``).

    ``source``: a ``CandidateSource`` taken before RecBole's split (see its docstring).
    """
    sampled = _sampled_phases(config)
    mode = config["eval_candidates"]
    if mode == "recbole":
        return samplers
    if mode != "fixed":
        raise ConfigValueError(f"eval_candidates: '{mode}' is not one of {', '.join(choices('eval_candidates'))}")
    if not sampled:
        getLogger().warning("eval_candidates: fixed has no effect: evaluation is full-sort (eval_args.mode: full)")
        return samplers
    n_negs = {config[f"{p}_neg_sample_args"]["sample_num"] for p in sampled}
    distributions = {config[f"{p}_neg_sample_args"]["distribution"] for p in sampled}
    if distributions != {"uniform"} or len(n_negs) != 1:
        raise ConfigValueError("eval_candidates: fixed supports eval_args.mode uniN (the same N for valid and test)")
    tables = load_or_draw(config, dataset, n_negs.pop(), source)
    train, valid, test = samplers
    return (
        train,
        FixedCandidateSampler(valid, tables["valid"]) if "valid" in sampled else valid,
        FixedCandidateSampler(test, tables["test"]) if "test" in sampled else test,
    )


def check_eval_candidates(config, dataset, valid_data, test_data):
    """RecBole's own candidates (``eval_candidates: recbole``): every user has N unseen items to draw."""
    if config["eval_candidates"] == "recbole":
        check_enough_negatives(dataset, valid_data, test_data)


def sample_eval_users(config, dataset, splits, apart=False):
    """RecBole's [train, valid, test] with ``eval_user_sample: K``: valid and test keep a seeded sample of K users (all
    models alike): the test users' sample in both, or with ``apart`` (valid and test users differ:
    ``data.scenarios``) a sample of each. ``splits`` as they are without it."""
    size = config["eval_user_sample"]
    if not size:
        return splits
    seed = config["eval_candidates_seed"]

    def sample(split):
        users = np.unique(split.inter_feat[dataset.uid_field].numpy())
        rng = np.random.default_rng(seed)
        return users, np.sort(rng.choice(users, size=min(int(size), len(users)), replace=False))

    train, valid, test = splits
    uid = dataset.uid_field
    users, chosen = sample(test)
    keep = torch.from_numpy(chosen)
    keep_valid = torch.from_numpy(sample(valid)[1]) if apart else keep
    valid = valid.copy(valid.inter_feat[torch.isin(valid.inter_feat[uid], keep_valid)])
    test = test.copy(test.inter_feat[torch.isin(test.inter_feat[uid], keep)])
    getLogger().info(
        set_color("eval user sample", "green") + f": evaluating on {len(chosen)} of {len(users)} users (seed {seed})"
    )
    return [train, valid, test]
