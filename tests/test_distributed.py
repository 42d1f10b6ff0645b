"""Data-parallel runs (RecBole's nproc launch, gloo on CPU) and the options for large LLMs: a 2-process run trains
and measures what 1 process does, only the main process writes, micro-batches and gradient checkpointing leave the
gradients unchanged, and ``llm_device_map`` places the LLM without changing scores."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import BACKBONE_PROPS, REPO, TINY_DATASET

TIMEOUT = 900


MODELS = ("ALLMRec", "TALLRec", "MLPLLM", "LLMOnly")  # every plugin model, in its paper form (bare names)


def _run_cli(folder, props, *flags, launcher=()):
    """run_recbole_llm.py in ``folder`` with ``props`` as a property file: (test metrics per model, from the run's
    table.md, and stdout)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "props.yaml").write_text(yaml.safe_dump(props), encoding="utf-8")
    command = [sys.executable, *launcher, str(REPO / "run_recbole_llm.py"), f"--model={','.join(MODELS)}"]
    command += [f"--dataset={TINY_DATASET}"]
    command += ["--config_files=props.yaml", *flags]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    results = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("results: "))
    return _metrics((folder / results / "table.md").read_text(encoding="utf-8")), done.stdout  # every metric, n


def _metrics(table):
    """{model: {metric: value, metric_se: its standard error, n: users}} from the comparison table a run writes
    (its metric@k columns, "mean ± SE", and n)."""
    rows, header = {}, None
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "model":
            header = cells
        elif header and len(cells) == len(header) and cells[0] in MODELS:
            row = {"n": float(cells[header.index("n")])}
            for name, value in zip(header, cells):
                if "@" in name:
                    mean, se = value.split(" ± ")
                    row[name], row[name + "_se"] = float(mean), float(se)
            rows[cells[0]] = row
    return rows


def _files(folder):
    """Relative paths of the files a run left, with run-specific parts (dates, pids) blanked."""
    names = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "props.yaml":
            name = re.sub(r"-[0-9a-f]{6}(?=\.log$)", "-#", str(path.relative_to(folder)))  # RecBole's random log id
            names.append(re.sub(r"[0-9a-f]*\d[0-9a-f]*", "#", name))
    return sorted(names)


@pytest.fixture
def parallel_props(allmrec_config):
    return {
        **allmrec_config,
        "checkpoint_dir": "checkpoints",
        "stage2_batch_size": 7,  # odd: the processes' shares differ by one row
        "stage1_batch_size": 9,
        "lora_dropout": 0.0,  # dropout masks are drawn per process: off, to compare exactly
        "lora_r": 4,
        "eval_batch_size": 30,  # 3 users a batch: several batches to shard
    }


def test_two_processes_train_and_measure_what_one_does_and_only_the_main_one_writes(tmp_path, parallel_props):
    # cf_checkpoint auto: the main process trains the backbone alone while the other waits
    parallel_props = {**parallel_props, **BACKBONE_PROPS, "cf_checkpoint": "auto"}
    one, one_out = _run_cli(tmp_path / "one", parallel_props)
    two, two_out = _run_cli(tmp_path / "two", parallel_props, "--nproc=2", "--port=29631")
    torchrun = ("-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29632")
    three, _ = _run_cli(tmp_path / "torchrun", parallel_props, launcher=torchrun)
    assert set(one) == set(MODELS) and two.keys() == one.keys() == three.keys(), two_out
    for model in one:
        assert len(one[model]) == 13 and two[model] == pytest.approx(one[model], abs=2e-4), (model, one, two)
        assert three[model] == pytest.approx(one[model], abs=2e-4), (model, one, three)
    # the same trained weights: DDP averaged the two halves' gradients into the whole batch's
    stages = sorted((tmp_path / "one" / "checkpoints").rglob("*-stage*.safetensors"))
    stages += sorted((tmp_path / "one" / "checkpoints").rglob("*-lora-*.safetensors"))
    assert len(stages) == 4, stages  # ALLMRec's two stages, MLPLLM's stage 2, TALLRec's LoRA
    for path in stages:  # names carry the backbone file's digest: each run trained its own (the same weights)
        pattern = re.sub(r"-[0-9a-f]{10}", "-*", str(path.relative_to(tmp_path / "one")))
        (twin,) = (tmp_path / "two").glob(pattern)
        alone, shared = load_file(path), load_file(twin)
        weights = [key for key in alone if key.startswith("weights.")]
        assert weights and all(torch.allclose(alone[k], shared[k], atol=1e-5) for k in weights), path
    # the same files, once each: the second process wrote no checkpoint, cache, adapter or log of its own
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
    assert two_out.count("Test results") == 1


def test_micro_batches_accumulate_the_gradient_of_the_whole_batch(workdir, parallel_props):
    from recbole_llmplugin.quick_start import quick_start
    from recbole_llmplugin.model.llm_recommender.allmrec import ALLMRec
    from recbole_llmplugin.trainer.trainer import StagedTrainer

    grads = {}
    for micro in (None, 2):
        config, _ = quick_start.build_config(
            ALLMRec, TINY_DATASET, config_dict={**parallel_props, "llm_micro_batch_size": micro}
        )
        _, train_data, _, _ = quick_start.prepare_data(config)
        torch.manual_seed(0)
        model = ALLMRec(config, train_data._dataset)
        trainer = StagedTrainer(config, model)
        model.set_stage("stage2")
        model.train()
        stage = model.training_stages()[-1]
        batch = next(iter(model.stage_train_loader(stage, train_data)))
        torch.manual_seed(1)
        loss = trainer.shared_loss(model.stage2_loss)(batch)
        model.total_loss(loss).backward()
        grads[micro] = (
            float(model.total_loss(loss).detach()),
            [p.grad.clone() for p in model.parameters() if p.requires_grad],
        )
    assert grads[2][0] == pytest.approx(grads[None][0], rel=1e-5)
    for whole, split in zip(grads[None][1], grads[2][1]):
        assert torch.allclose(whole, split, atol=1e-6, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(workdir, parallel_props):
    from recbole_llmplugin.quick_start import quick_start
    from recbole_llmplugin.model.llm_recommender.tallrec import TALLRec

    grads = {}
    for checkpointing in (False, True):
        config, _ = quick_start.build_config(
            TALLRec, TINY_DATASET, config_dict={**parallel_props, "llm_gradient_checkpointing": checkpointing}
        )
        _, train_data, _, _ = quick_start.prepare_data(config)
        torch.manual_seed(0)
        model = TALLRec(config, train_data._dataset)
        model.set_stage("stage2")
        model.train()
        assert model.llm.base_model.model.is_activation_checkpointing == checkpointing
        batch = next(iter(model.stage_train_loader(model.training_stages()[0], train_data)))
        torch.manual_seed(1)
        model.stage2_loss(batch).backward()
        grads[checkpointing] = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    assert len(grads[True]) > 0
    for plain, recomputed in zip(grads[False], grads[True]):
        assert torch.allclose(plain, recomputed, atol=1e-6, rtol=1e-4)


def test_device_map_auto_splits_the_llm_over_cpu_and_disk_and_scores_the_same(workdir, parallel_props, monkeypatch):
    """llm_device_map auto with a memory budget that holds the embeddings but not the layers (accelerate's
    max_memory, as a GPU's would be; here the CPU's, with the rest offloaded to disk): the LLM is really split over
    two devices, and A-LLMRec's scores are the unsplit LLM's."""
    import transformers

    from recbole_llmplugin.quick_start import quick_start
    from recbole_llmplugin.model.llm_recommender.allmrec import ALLMRec

    loader = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def with_budget(cls, path, **kwargs):
        if "device_map" in kwargs:  # the embeddings (and the tied head) fit in 2x their size, the layers go to disk
            kwargs.update(max_memory={"cpu": 2 * embedding_bytes}, offload_folder=str(workdir / "offload"))
        return loader(cls, path, **kwargs)

    scores = {}
    for device_map in ("none", "auto"):
        config, _ = quick_start.build_config(
            ALLMRec, TINY_DATASET, config_dict={**parallel_props, "llm_device_map": device_map}
        )
        _, _, _, test_data = quick_start.prepare_data(config)
        torch.manual_seed(0)
        model = ALLMRec(config, test_data._dataset).to(config["device"])
        if device_map == "none":
            embedding_bytes = model.llm.get_input_embeddings().weight.numel() * 4
            monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(with_budget))
        else:
            assert set(model.llm.hf_device_map.values()) == {"cpu", "disk"}, model.llm.hf_device_map
            assert model.llm_dispatched
        model.eval()
        batch = next(iter(test_data))[0]
        scores[device_map] = model.predict(batch.to(config["device"]))
    assert torch.allclose(scores["none"], scores["auto"], atol=1e-5)


def test_bfloat16_llm_scores_like_float32_and_trains(workdir, parallel_props):
    """llm_dtype bfloat16 on the CPU: the LLM's weights are bf16, the scores follow float32's, and a stage-2 step
    back-propagates finite gradients into F_U / F_I (float32) through the bf16 LLM."""
    from recbole_llmplugin.quick_start import quick_start
    from recbole_llmplugin.model.llm_recommender.allmrec import ALLMRec

    scores = {}
    for dtype in ("float32", "bfloat16"):
        config, _ = quick_start.build_config(ALLMRec, TINY_DATASET, config_dict={**parallel_props, "llm_dtype": dtype})
        _, train_data, _, test_data = quick_start.prepare_data(config)
        torch.manual_seed(0)
        model = ALLMRec(config, test_data._dataset)
        assert next(model.llm.parameters()).dtype == getattr(torch, dtype)
        model.eval()
        scores[dtype] = model.predict(next(iter(test_data))[0])
    assert torch.corrcoef(torch.stack([scores["float32"], scores["bfloat16"]]))[0, 1] > 0.9
    model.set_stage("stage2")
    model.train()
    batch = next(iter(model.stage_train_loader(model.training_stages()[-1], train_data)))
    model.total_loss(model.stage2_loss(batch)).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "props, message",
    [
        ({"llm_device_map": "everywhere"}, "llm_device_map: 'everywhere' is not one of none, auto"),
        ({"llm_micro_batch_size": 0}, "llm_micro_batch_size: 0 must be an integer >= 1"),
        ({"llm_gradient_checkpointing": "yes"}, "llm_gradient_checkpointing: 'yes' must be True or False"),
    ],
)
def test_scale_out_option_errors(workdir, parallel_props, props, message):
    from recbole_llmplugin.quick_start import quick_start
    from recbole_llmplugin.utils.errors import ConfigValueError

    with pytest.raises(ConfigValueError, match=re.escape(message)):
        quick_start.build_config("ALLMRec", TINY_DATASET, config_dict={**parallel_props, **props})


def test_torchrun_environment_becomes_recbole_launch_keys():
    from recbole_llmplugin.utils.distributed import torchrun_keys

    env = {
        "TORCHELASTIC_RUN_ID": "x",
        "RANK": "5",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "8",
        "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29400",
    }
    assert torchrun_keys(env) == {
        "local_rank": 1,
        "world_size": 8,
        "nproc": 4,
        "offset": 4,
        "ip": "10.0.0.1",
        "port": "29400",
    }
    assert torchrun_keys({}) == {}


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_device_map_auto_spreads_the_llm_over_two_gpus(workdir, parallel_props):
    from recbole_llmplugin.quick_start import quick_start
    from recbole_llmplugin.model.llm_recommender.allmrec import ALLMRec

    props = {**parallel_props, "llm_device_map": "balanced", "gpu_id": "0,1"}
    config, _ = quick_start.build_config(ALLMRec, TINY_DATASET, config_dict=props)
    _, _, _, test_data = quick_start.prepare_data(config)
    model = ALLMRec(config, test_data._dataset).to(config["device"])
    assert len(set(model.llm.hf_device_map.values())) == 2
    model.eval()
    assert torch.isfinite(model.predict(next(iter(test_data))[0].to(config["device"]))).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA and bitsandbytes")
@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_llm_scores_on_cuda(workdir, parallel_props, quantization):
    pytest.importorskip("bitsandbytes")
    from recbole_llmplugin.quick_start import quick_start
    from recbole_llmplugin.model.llm_recommender.allmrec import ALLMRec

    props = {**parallel_props, "llm_quantization": quantization, "llm_dtype": "bfloat16"}
    config, _ = quick_start.build_config(ALLMRec, TINY_DATASET, config_dict=props)
    _, _, _, test_data = quick_start.prepare_data(config)
    model = ALLMRec(config, test_data._dataset).to(config["device"])
    model.eval()
    assert torch.isfinite(model.predict(next(iter(test_data))[0].to(config["device"]))).all()


def test_main_process_writes_and_the_others_wait(tmp_path, monkeypatch):
    """``main_first`` / the trainer's write guard: a process that is not the main one writes nothing."""
    from recbole_llmplugin.utils import distributed
    from recbole_llmplugin.trainer import trainer

    monkeypatch.setattr(distributed, "is_main", lambda: False)
    monkeypatch.setattr(trainer, "is_main", lambda: False)
    stub = trainer.LLMTrainer.__new__(trainer.LLMTrainer)
    stub.saved_model_file = str(tmp_path / "model.safetensors")
    stub._save_checkpoint(0)
    assert not any(Path(tmp_path).iterdir())


def test_scale_benchmark_runs_scaled_down_on_the_cpu_in_two_processes(tmp_path, parallel_props):
    """The GPU benchmark (``.ci/gpu-bench`` runs it) on tiny models, 2 gloo processes: it prints its figures."""
    (tmp_path / "props.yaml").write_text(yaml.safe_dump(parallel_props), encoding="utf-8")
    command = [sys.executable, "-m", "recbole_llmplugin.tools.bench", "scale", f"--dataset={TINY_DATASET}"]
    command += ["--config_files=props.yaml", "--nproc=2", "--port=29633"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    table = done.stdout[done.stdout.index("Stage 2 and evaluation") :]
    assert "(2 process(es), cpu)" in table
    header = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert header[:4] == ["model", "processes", "device", "stage-2 s / epoch"]
    rows = {cells[0]: dict(zip(header, cells)) for cells in _table_rows(table)}
    assert set(rows) == {"ALLMRec", "TALLRec"}
    for row in rows.values():
        assert float(row["prompt tokens / s"].replace(",", "")) > 0 and float(row["eval s / user"]) > 0
        assert row["eval users"] == "60" and row["peak GPU MiB"] == "-"
    assert not list((tmp_path / "checkpoints").glob("scale-*"))  # its fresh stage checkpoints are removed


def _table_rows(table):
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[0] in ("ALLMRec", "TALLRec"):
            yield cells


def test_building_the_packaged_llm_folder_leaves_the_seeded_rng_alone(tmp_path, monkeypatch):
    """The first run on a machine builds the model folder from the GGUF (a random init, then the weights): the
    seeded RNG must come out as it went in, or that run trains from other initial weights than every later run."""
    from recbole_llmplugin.model.layers import llm_loading

    def build(gguf, target):  # stands in for the real build: a random init, then the folder
        torch.nn.Linear(64, 64)
        Path(target).mkdir(parents=True)
        (Path(target) / "config.json").write_text("{}", encoding="utf-8")

    monkeypatch.setenv("RECBOLE_LLM_CACHE", str(tmp_path))
    monkeypatch.setattr(llm_loading, "build_from_gguf", build)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    llm_loading.resolve_llm_path("smollm2-135m")
    assert (tmp_path / "models" / "smollm2-135m" / "config.json").is_file()
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("launch", [["--nproc=2"], ["--world_size=2", "--nproc=1"]])
def test_recbole_models_are_refused_in_a_data_parallel_run(capsys, launch):
    """RecBole trains its own models on per-process shards (other batches, other metrics than one process): a
    data-parallel run refuses them in one line before any process starts."""
    from recbole_llmplugin.quick_start.cli import main

    code = main(["--model=LLMOnly,SASRec", f"--dataset={TINY_DATASET}", *launch])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "SASRec would train on per-process shards" in err
