"""The training examples of a stage, as a RecBole training loader.

Each user's last training position (or every position, for a stage with ``all_positions``), optionally on a seeded
sample of users (``user_sample``). RecBole's sequential augmentation lists each user's prefixes in time order.
"""

from logging import getLogger

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader

from recbole_llmplugin.utils.distributed import single_process_view


def stage_train_loader(config, train_data, stage, all_positions=False, user_sample=None):
    """A shuffled loader of ``stage``'s examples from ``train_data`` (RecBole's training loader), in batches of
    ``stage.batch_size``; the sample of ``user_sample`` users is drawn with ``config["seed"]``."""
    dataset = train_data._dataset
    inter = dataset.inter_feat
    uid = inter[dataset.uid_field].numpy()
    keep = np.ones(len(uid), dtype=bool)
    if not all_positions:  # each user's last row
        row = np.arange(len(uid))
        last = np.full(uid.max() + 1, -1)
        np.maximum.at(last, uid, row)
        keep &= row == last[uid]
    if user_sample:
        users = np.unique(uid)
        chosen = np.random.default_rng(config["seed"]).choice(
            users, size=min(int(user_sample), len(users)), replace=False
        )
        keep &= np.isin(uid, chosen)
        getLogger().info(f"{stage.name}: training on a seeded sample of {len(chosen)} of {len(users)} users")
    subset = dataset.copy(inter[torch.from_numpy(keep)])
    saved_batch = config["train_batch_size"]
    config["train_batch_size"] = stage.batch_size
    try:
        with single_process_view(config):  # every process reads the same batches (trainer.shared_loss)
            loader = TrainDataLoader(config, subset, None, shuffle=True)
    finally:
        config["train_batch_size"] = saved_batch
    # shuffled by its own seeded generator, alike in every process; RecBole's trainer would otherwise call
    # set_epoch on the DistributedSampler of a loader built for data-parallel runs, which this one has not
    loader.shuffle = False
    return loader
