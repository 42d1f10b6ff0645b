"""Exact resume and run isolation, on real subprocesses (tiny models): a run killed with SIGKILL in the middle of
an epoch and re-run ends with bit-identical stage weights; two identical runs started at once share the work
without either resuming the other's stage."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, TINY_DATASET

DRIVER = """
import json, os, signal, sys
sys.argv = sys.argv[:2]
# Ctrl-C as in a terminal: a process started in the background of a non-interactive shell inherits SIGINT ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
config = json.load(open(sys.argv[1]))
kill = os.environ.get("KILL_AT")  # "<stage>:<n>": a signal (KILL_SIGNAL, SIGKILL) at the n-th batch of that stage
if kill:
    from recbole_llmplugin.model.llm_recommender.allmrec import ALLMRec
    stage, n = kill.split(":")
    original = getattr(ALLMRec, stage + "_loss")
    calls = [0]
    def counted(self, interaction):
        calls[0] += 1
        if calls[0] == int(n):
            os.kill(os.getpid(), getattr(signal, os.environ.get("KILL_SIGNAL", "SIGKILL")))
        return original(self, interaction)
    setattr(ALLMRec, stage + "_loss", counted)
release = os.environ.get("HOLD_UNTIL")  # a file: the first stage-1 batch waits for it (the stage's lock held)
if release:
    import time
    from recbole_llmplugin.model.llm_recommender.allmrec import ALLMRec
    original_stage1 = ALLMRec.stage1_loss
    def held(self, interaction):
        deadline = time.time() + 300
        while not os.path.exists(release) and time.time() < deadline:
            time.sleep(0.1)
        return original_stage1(self, interaction)
    ALLMRec.stage1_loss = held
if os.environ.get("VIA_CLI"):  # the command line's main, as run_recbole_llm.py calls it
    import yaml
    yaml.safe_dump(config, open("config.yaml", "w"))
    from recbole_llmplugin.quick_start.cli import main
    args = ["--model=ALLMRec", "--dataset=%s", "--config_files=config.yaml"]
    sys.argv = ["run_recbole_llm.py"] + args
    sys.exit(main(args))
from recbole_llmplugin import run_recbole_llm
result = run_recbole_llm("ALLMRec", "%s", config_dict=config)
print("RESULT " + json.dumps({k: float(v) for k, v in result["test_result"].items()}))
""" % (TINY_DATASET, TINY_DATASET)


def _run(folder, config, kill_at=None, wait=True, signal_name="SIGKILL", via_cli=False, hold_until=None, output=None):
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "driver.py").write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    for key in ("KILL_AT", "KILL_SIGNAL", "VIA_CLI", "HOLD_UNTIL"):
        env.pop(key, None)
    if hold_until:
        env["HOLD_UNTIL"] = str(hold_until)
    if kill_at:
        env.update(KILL_AT=kill_at, KILL_SIGNAL=signal_name)
    if via_cli:
        env["VIA_CLI"] = "1"
    handle = open(output, "w") if output else None  # the output read while the run goes on
    process = subprocess.Popen(
        [sys.executable, "driver.py", "config.json"],
        cwd=folder,
        env=env,
        stdout=handle or subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process.output_handle = handle
    return _finish(process) if wait else process


def _finish(process):
    output, _ = process.communicate(timeout=600)
    if process.output_handle:
        process.output_handle.close()
        output = Path(process.output_handle.name).read_text()
    return process.returncode, output


def _wait_for(condition, what, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.2)


def _result(output):
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, output[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def _stage_weights(folder):
    files = sorted((folder / "saved" / "allmrec").glob("*-stage*.safetensors"))
    files = [f for f in files if ".resume." not in f.name]
    return {f.name: load_file(str(f)) for f in files}


@pytest.fixture
def resume_config(allmrec_config):
    # 3 epochs per stage, stage 2 validated (best epoch kept): resume must restore the epoch counter, the best
    # score, the optimizer and every RNG (shuffles, negatives, dropout)
    return {
        **allmrec_config,
        "stage1_epochs": 3,
        "stage2_epochs": 3,
        "stage2_validate": True,
        "state": "INFO",
        "checkpoint_dir": "saved",
    }


@pytest.mark.parametrize("kill_at", ["stage1:6", "stage2:12"])  # mid epoch 1 (60 users: 4 batches of 16, 8 of 8)
def test_sigkill_then_rerun_gives_bit_identical_weights(tmp_path, resume_config, kill_at):
    code, clean_output = _run(tmp_path / "clean", resume_config)
    assert code == 0, clean_output[-3000:]
    code, output = _run(tmp_path / "killed", resume_config, kill_at=kill_at)
    assert code == -9, output[-3000:]  # killed mid-epoch: no result
    assert list((tmp_path / "killed" / "saved" / "allmrec").glob("*.lock")), "the killed run left its lock"
    code, output = _run(tmp_path / "killed", resume_config)
    assert code == 0, output[-3000:]
    stage = kill_at.split(":")[0]
    assert "took over the stale lock" in output and "resuming" in output and "from epoch 1" in output
    assert _result(output) == _result(clean_output)
    clean, resumed = _stage_weights(tmp_path / "clean"), _stage_weights(tmp_path / "killed")
    assert sorted(clean) == sorted(resumed) and any(stage in name for name in clean)
    for name in clean:
        assert sorted(clean[name]) == sorted(resumed[name])
        for key in clean[name]:
            assert torch.equal(clean[name][key], resumed[name][key]), f"{name}: {key} differs after resume"
    assert not list((tmp_path / "killed" / "saved" / "allmrec").glob("*.resume.*")), "resume state left behind"


def test_two_identical_runs_at_once_share_without_resuming(tmp_path, resume_config):
    code, clean_output = _run(tmp_path / "clean", resume_config)
    assert code == 0, clean_output[-3000:]
    shared = tmp_path / "shared"
    release = tmp_path / "release"
    # the first run holds stage 1's lock until the second has reported waiting for it, whatever the machine's speed
    first = _run(shared, resume_config, wait=False, hold_until=release)
    _wait_for(lambda: list((shared / "saved").rglob("*.lock")), "lock of the first run")
    second_log = tmp_path / "second.txt"
    second = _run(shared, resume_config, wait=False, output=second_log)
    _wait_for(lambda: "waiting for it to finish" in second_log.read_text(), "wait by the second run")
    release.touch()
    (code1, out1), (code2, out2) = _finish(first), _finish(second)
    assert code1 == 0 and code2 == 0, (out1 + out2)[-3000:]
    assert _result(out1) == _result(clean_output) == _result(out2)
    both = out1 + out2
    assert "resuming" not in both and "Resume training" not in both
    assert "waiting for it to finish" in both  # one run waited for the other's stage, then reused it
    assert "reusing finished checkpoint" in both
    assert not list((shared / "saved").rglob("*.lock"))


def test_ctrl_c_stops_with_one_line_and_the_rerun_resumes(tmp_path, resume_config):
    code, clean_output = _run(tmp_path / "clean", resume_config)
    assert code == 0, clean_output[-3000:]
    folder = tmp_path / "interrupted"
    code, output = _run(folder, resume_config, kill_at="stage2:12", signal_name="SIGINT", via_cli=True)
    assert code == 130, output[-3000:]
    assert [line for line in output.splitlines() if line.startswith("interrupted:")], output[-3000:]
    assert "Traceback" not in output
    assert not list((folder / "saved").rglob("*.lock")), "the lock outlived the run"
    assert list((folder / "saved" / "allmrec").glob("*stage2*.resume.safetensors")), "no resume state was kept"
    code, output = _run(folder, resume_config)
    assert code == 0 and "from epoch 1" in output, output[-3000:]
    assert _result(output) == _result(clean_output)
