"""Data-parallel runs on torch.distributed: process launch, rank helpers, the per-stage DDP wrapper and the
evaluation gather.

RecBole's own multi-GPU path (``nproc``, ``world_size``, ``offset``, ``ip``, ``port``) starts one process per
device and wraps the whole model in DDP. A plugin model is a frozen LLM plus a few trained modules that change
from stage to stage, so the plugin keeps RecBole's launch keys and process group but

- wraps only the parameters a stage trains (``data_parallel``), anew at every stage;
- gives every process the same global batch and the same random draws; each process trains its share of the
  rows (``share_rows``), so N processes train what one process would (``trainer.LLMTrainer``);
- shards evaluation by whole batches of users and gathers what RecBole's collector kept, so the metrics are
  computed once, on every user, exactly as in one process (``gather_struct``);
- lets only the main process write (checkpoints, caches, results); the others wait (``main_first``).

``torchrun`` works too: its environment variables become the same keys (``torchrun_keys``).
"""

import contextlib
import datetime
import os

import torch
import torch.distributed as dist
from torch import nn

# RecBole's launch keys (run_recbole.py --nproc, --world_size, --group_offset, --ip, --port) and local_rank
LAUNCH_KEYS = ("local_rank", "world_size", "nproc", "offset", "ip", "port")
GROUP_TIMEOUT = datetime.timedelta(hours=2)  # a rank waits this long at a barrier (the main one may train a backbone)
_alone = [False]  # the main process is working alone (``main_alone``): no collectives


def is_distributed():
    """A data-parallel run whose processes all take part in what follows (not inside ``main_alone``)."""
    return dist.is_available() and dist.is_initialized() and not _alone[0]


def rank():
    return dist.get_rank() if is_distributed() else 0


def world_size():
    return dist.get_world_size() if is_distributed() else 1


def is_main():
    return rank() == 0


def barrier():
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """The main process runs the block first (it writes a cache or a checkpoint), the others after it (they read
    what it wrote). Every process must reach it, as with any collective."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


@contextlib.contextmanager
def single_process_view(config):
    """RecBole reads ``single_spec`` when it builds loaders and trainers: inside this block they are built as in one
    process (no DistributedSampler, no DDP over the whole model, frozen LLM included)."""
    saved = config["single_spec"]
    config["single_spec"] = True
    try:
        yield config
    finally:
        config["single_spec"] = saved


def torchrun_keys(environ=None):
    """RecBole launch keys from torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE...), or {} outside torchrun."""
    env = os.environ if environ is None else environ
    if "TORCHELASTIC_RUN_ID" not in env and not ("LOCAL_RANK" in env and "WORLD_SIZE" in env):
        return {}
    local_rank, global_rank = int(env["LOCAL_RANK"]), int(env.get("RANK", env["LOCAL_RANK"]))
    return {
        "local_rank": local_rank,
        "world_size": int(env["WORLD_SIZE"]),
        "nproc": int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])),
        "offset": global_rank - local_rank,
        "ip": env.get("MASTER_ADDR", "localhost"),
        "port": str(env.get("MASTER_PORT", "29500")),
    }


def start_process_group(settings, backend):
    """Join the process group of RecBole's launch keys (once per process: a run builds several Configs)."""
    if dist.is_initialized():
        return
    if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun: its own rendezvous store
        dist.init_process_group(backend=backend, init_method="env://", timeout=GROUP_TIMEOUT)
        return
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{settings['ip']}:{settings['port']}",
        rank=settings["local_rank"] + settings["offset"],
        world_size=settings["world_size"],
        timeout=GROUP_TIMEOUT,
    )


def main_value(value):
    """The main process's ``value`` in every process (e.g. a folder name made from the time)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_cpu_threads(nproc):
    """On the CPU, each of ``nproc`` processes takes its share of the cores for torch's threads (every process would
    otherwise start one per core, and together they would oversubscribe the machine); OMP_NUM_THREADS overrides."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, int(nproc))))


@contextlib.contextmanager
def main_alone():
    """The main process works alone while the others wait in ``main_first`` (e.g. it trains the CF backbone through
    RecBole as one process): collectives inside are skipped (the others are not there to join them), and on the
    CPU it takes all the cores back."""
    threads = torch.get_num_threads()
    if is_distributed() and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
    _alone[0] = True
    try:
        yield
    finally:
        _alone[0] = False
        torch.set_num_threads(threads)


def share_rows(n, lengths=None, device=None):
    """This process's rows of a global batch of ``n`` examples: every ``world_size``-th row after sorting by
    ``lengths`` (prompt-length estimates): each process gets an even mix of lengths, and its micro-batches, cut from
    rows of similar length, pad little."""
    order = torch.argsort(lengths, stable=True) if lengths is not None else torch.arange(n, device=device)
    return order[rank() :: world_size()]


def batch_range(n_batches):
    """[start, stop) of the evaluation batches this process scores: contiguous blocks, so the gathered results keep
    the batches' order."""
    size, extra = divmod(n_batches, world_size())
    start = rank() * size + min(rank(), extra)
    return start, start + size + (rank() < extra)


class _Parameters(nn.Module):
    """The parameters one stage trains, as a module for DDP (which registers its gradient hooks on them); the
    parameters stay those of the model (shared, not copied)."""

    def __init__(self, params):
        super().__init__()
        self.params = nn.ParameterList(params)

    def forward(self, x):
        return x


def data_parallel(params, device):
    """DDP over ``params`` (a stage's trained parameters), or None in one process or with nothing to train. DDP
    broadcasts them from the main process, so every process starts the stage from the same weights."""
    params = list(params)
    if not is_distributed() or not params:
        return None
    device = torch.device(device)
    ids = [device.index or 0] if device.type == "cuda" else None  # CPU modules take no device_ids
    return nn.parallel.DistributedDataParallel(_Parameters(params), device_ids=ids)


# what RecBole's collector gathers batch by batch (rows of evaluated users); the other keys are global
_PER_USER_KEYS = ("rec.items", "rec.topk", "rec.meanrank", "rec.score", "data.label")


def gather_struct(struct):
    """RecBole's DataStruct with the per-user results of every process, in batch order (``batch_range``)."""
    if not is_distributed():
        return struct
    mine = {key: struct._data_dict[key].cpu() for key in _PER_USER_KEYS if key in struct._data_dict}
    parts = [None] * world_size()
    dist.all_gather_object(parts, mine)  # one collective, whatever keys a process holds
    for key in _PER_USER_KEYS:
        pieces = [part[key] for part in parts if key in part]
        if pieces:
            struct._data_dict[key] = torch.cat(pieces, 0)
    return struct


def run_launched(function, args, nproc, launch):
    """``function(*args, settings)`` as a run launches it: in ``nproc`` processes spawned here when ``launch`` has
    no ``local_rank`` (RecBole's ``--nproc``), else in this process (one process, or one of torchrun's); returns
    what the main process's call returned."""
    if launch and "local_rank" not in launch:
        return run_ranks(function, args, nproc, launch)
    return function(*args, launch or None)


def run_ranks(function, args, nproc, launch):
    """Start ``nproc`` processes (torch.multiprocessing spawn, as RecBole's ``run``) running
    ``function(*args, settings)`` with RecBole's launch keys; returns what the main process's call returned."""
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_rank_main, args=(function, args, launch, queue), nprocs=nproc, join=True)
    return queue.get() if not queue.empty() else None


def _rank_main(local_rank, function, args, launch, queue):
    settings = dict(launch, local_rank=local_rank)
    result = function(*args, settings)
    if local_rank + settings["offset"] == 0:
        queue.put(result)
