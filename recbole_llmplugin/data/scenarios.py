"""User scenarios of A-LLMRec (section 5.2): cold users and few-shot training, on RecBole's own leave-one-out split.

Both hold a seeded set of users out of every training step -- RecBole's training loader, hence the CF backbone,
stage 1, stage 2 and LoRA alike, and early stopping on valid -- and test on those users alone:

- ``cold_users: N``: N users (seed ``scenario_seed``, among those with at least ``cold_user_len`` interactions) keep
  only their last ``cold_user_len`` interactions (default 3: two history items, then the test target), the
  paper's users with exactly three interactions; the others train and validate as usual.
- ``few_shot_users: K``: only K users (seed ``scenario_seed``) train and validate; every other user is tested, its
  history read at inference only.

The held-out users are chosen and cut before RecBole's split and before the fixed candidates are drawn, so every
model of a comparison trains on the same users and ranks the same candidates.
"""

from logging import getLogger

import numpy as np
import torch
from recbole.utils import set_color

from recbole_llmplugin.utils.errors import ConfigValueError

# the keys that choose who trains: part of every trained artefact's identity, the CF backbone's included
SCENARIO_KEYS = frozenset({"cold_users", "cold_user_len", "few_shot_users", "scenario_seed"})


def scenario_name(config):
    """ "cold users", "few-shot" or None."""
    if config["cold_users"] and config["few_shot_users"]:
        raise ConfigValueError(
            f"cold_users: {config['cold_users']} and few_shot_users: {config['few_shot_users']} are two scenarios; "
            f"set one of them and the other to ~"
        )
    if config["cold_users"]:
        return "cold users"
    return "few-shot" if config["few_shot_users"] else None


def hold_out_users(config, dataset):
    """The held-out internal user ids of the run's scenario (None: no scenario); for cold users, their interactions
    are cut to the last ``cold_user_len`` in ``dataset.inter_feat``. Call after ``create_dataset`` and before anything
    reads the interactions (fixed candidates, ``eval_user_sample``); ``split_by_scenario`` then splits RecBole's
    split by them."""
    name = scenario_name(config)
    if name is None:
        return None
    uid = dataset.uid_field
    inter = dataset.inter_feat  # a DataFrame before build()
    users, counts = np.unique(inter[uid].to_numpy(), return_counts=True)
    rng = np.random.default_rng(config["scenario_seed"])
    if name == "cold users":
        length = config["cold_user_len"]
        eligible = users[counts >= length]
        wanted = config["cold_users"]
        if wanted >= len(eligible):
            raise ConfigValueError(
                f"cold_users: {wanted} would hold out all {len(eligible)} users with at least {length} interactions "
                f"(cold_user_len), leaving none to train; give fewer"
            )
        held = np.sort(rng.choice(eligible, size=wanted, replace=False))
        _keep_last(dataset, held, length)
    else:
        wanted = config["few_shot_users"]
        if wanted >= len(users):
            raise ConfigValueError(
                f"few_shot_users: {wanted} is not fewer than the dataset's {len(users)} users, leaving none to test; "
                f"give fewer"
            )
        trained = rng.choice(users, size=wanted, replace=False)
        held = np.setdiff1d(users, trained)
    dataset.scenario_held_out = held
    return held


def _keep_last(dataset, users, length):
    """Only the last ``length`` interactions (time order) of ``users`` stay in the dataset."""
    inter = dataset.inter_feat
    uid, time = dataset.uid_field, dataset.time_field
    if time is None or time not in inter:
        raise ConfigValueError(
            "cold_users keeps each held-out user's last interactions, which needs the timestamp column: add it to "
            "load_col inter"
        )
    # 1 = the user's last; among equal timestamps the row standing first in the file ranks as the later
    from_end = inter.groupby(uid)[time].rank(method="first", ascending=False)
    cut = inter[uid].isin(users).to_numpy() & (from_end.to_numpy() > length)
    dataset.inter_feat = inter[~cut].reset_index(drop=True)


def split_by_scenario(config, dataset, splits, held):
    """RecBole's [train, valid, test] (``Dataset.build``) with the held-out users (``hold_out_users``) dropped from
    train and valid and kept alone in test; ``splits`` as they are without a scenario (``held`` None)."""
    if held is None:
        return splits
    held_tensor = torch.from_numpy(np.asarray(held, dtype=np.int64))
    uid = dataset.uid_field

    def rows(split, keep_held):
        inside = torch.isin(split.inter_feat[uid], held_tensor)
        return split.copy(split.inter_feat[inside if keep_held else ~inside])

    train, valid, test = splits
    train, valid, test = rows(train, False), rows(valid, False), rows(test, True)
    n_train = len(torch.unique(train.inter_feat[uid]))
    n_test = len(torch.unique(test.inter_feat[uid]))
    getLogger().info(
        set_color(scenario_name(config), "green")
        + f": {n_train} users train and validate; {n_test} held-out users are tested"
    )
    return [train, valid, test]
