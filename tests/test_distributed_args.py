"""Argument checks of the distributed helpers; nothing here starts torchrun."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from helpers.distributed import ddp, local_sgd, sharding, tuning
from helpers.distributed.launch import run_workers, torchrun_command
from helpers.distributed.runtime import choose_backend
from helpers.distributed.trace import load_events, step_breakdown


@pytest.fixture(autouse=True)
def no_torchrun_env(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv(ddp.KILL_ENV, raising=False)


@pytest.mark.parametrize("world_size", [0, -1])
def test_backend_rejects_world_size(world_size):
    with pytest.raises(ValueError, match=f"world_size must be at least 1.*got {world_size}"):
        choose_backend(world_size)


@pytest.mark.parametrize("world_size", [1.0, "2", True])
def test_backend_rejects_non_int(world_size):
    with pytest.raises(TypeError, match="world_size must be an integer"):
        choose_backend(world_size)


def test_backend_cpu_machine_uses_gloo(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_backend(1) == ("gloo", torch.device("cpu"), 0)


def test_ddp_args_defaults_unchanged():
    args = ddp.parse_args([])
    assert args.lr == 1e-3
    assert args.bucket_cap_mb == 25.0
    assert args.kill_at_step is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "-1"], "--lr: must be a finite number above zero, got '-1'"),
        (["--lr", "nan"], "--lr: must be a finite number above zero, got 'nan'"),
        (["--lr", "0"], "--lr: must be a finite number above zero"),
        (["--lr", "fast"], "--lr: invalid number 'fast'"),
        (["--bucket-cap-mb", "-5"], "--bucket-cap-mb: must be a finite number above zero, got '-5'"),
        (["--bucket-cap-mb", "inf"], "--bucket-cap-mb: must be a finite number above zero"),
        (["--kill-at-step", "-3"], "--kill-at-step .* must be 0 or more, got -3"),
        (["--kill-at-step", "3", "--kill-rank", "-1"], "--kill-rank must be 0 or more, got -1"),
    ],
)
def test_ddp_args_reject_bad_value(argv, message, capsys):
    with pytest.raises(SystemExit):
        ddp.parse_args(argv)
    assert re.search(message, capsys.readouterr().err)


def test_ddp_args_reject_kill_rank_outside_world(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit):
        ddp.parse_args(["--kill-at-step", "3", "--kill-rank", "99"])
    assert "--kill-rank 99 is outside the world size 2. Pass a rank in 0..1" in capsys.readouterr().err


def test_ddp_args_kill_rank_inside_world(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert ddp.parse_args(["--kill-at-step", "3", "--kill-rank", "1"]).kill_rank == 1


def test_ddp_args_kill_rank_unused_without_step(monkeypatch):
    # One process with the default --kill-rank 1 is fine while no fault is injected.
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert ddp.parse_args([]).kill_rank == 1


def test_ddp_args_reject_bad_kill_env(monkeypatch, capsys):
    monkeypatch.setenv(ddp.KILL_ENV, "ten")
    with pytest.raises(SystemExit):
        ddp.parse_args([])
    assert "$DIST_KILL_AT_STEP must be an integer step, got 'ten'" in capsys.readouterr().err


def test_ddp_args_kill_env_read(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(ddp.KILL_ENV, "10")
    assert ddp.parse_args([]).kill_at_step == 10


@pytest.mark.parametrize("worker", [local_sgd, sharding, tuning])
def test_worker_lr_rejects_negative(worker, capsys):
    with pytest.raises(SystemExit):
        worker.main(["--lr", "-1"])
    assert "--lr: must be a finite number above zero" in capsys.readouterr().err


def test_tuning_rejects_nan_bucket_cap(capsys):
    with pytest.raises(SystemExit):
        tuning.main(["--bucket-caps", "25", "nan"])
    assert "--bucket-caps: must be a finite number above zero, got 'nan'" in capsys.readouterr().err


def test_command_rejects_string_args():
    with pytest.raises(TypeError, match=r"args must be a list or tuple of strings.*shlex.split"):
        torchrun_command("ddp", args="--epochs 1")


def test_command_rejects_none_arg():
    with pytest.raises(TypeError, match=r"args\[1\] must be a string, path or number, got None"):
        torchrun_command("ddp", ["--epochs", None])


def test_command_keeps_paths_and_numbers():
    command = torchrun_command("ddp", ("--epochs", 2, "--out", Path("/tmp/r.json")))
    assert command[-4:] == ["--epochs", "2", "--out", "/tmp/r.json"]


def test_command_rejects_bool_nproc():
    with pytest.raises(ValueError, match="nproc must be a positive integer, got True"):
        torchrun_command("ddp", nproc=True)


def test_run_workers_rejects_string_args():
    with pytest.raises(TypeError, match="args must be a list or tuple of strings"):
        run_workers("ddp", "--epochs 1")


@pytest.mark.parametrize("timeout_s", [0, -1, float("nan"), float("inf")])
def test_run_workers_rejects_bad_timeout(timeout_s):
    with pytest.raises(ValueError, match="timeout_s must be a finite number of seconds above zero"):
        run_workers("ddp", [], timeout_s=timeout_s)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{\"foo\": 1}", "is not a Chrome trace"),
        ("[1, 2]", "event 0 is 1, not a JSON object"),
        ("42", "is not a Chrome trace"),
        ("{\"traceEvents\": \"x\"}", "is not a Chrome trace"),
        ("not json", "is not valid JSON"),
        ("[{\"ph\": \"X\", \"dur\": 5, \"ts\": 0}]", "complete event 0 needs a string 'name'"),
        ("[{\"ph\": \"X\", \"dur\": \"5\", \"ts\": 0, \"name\": \"a\"}]", "numeric 'ts' and 'dur'"),
    ],
)
def test_load_events_rejects_non_trace(tmp_path, content, message):
    path = tmp_path / "rank0.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_events(path)


def test_load_events_accepts_bare_list(tmp_path):
    events = [{"ph": "X", "name": "ProfilerStep#1", "ts": 0, "dur": 2_000}, {"ph": "M", "name": "process_name"}]
    path = tmp_path / "rank0.json"
    path.write_text(json.dumps(events))
    assert load_events(path) == events[:1]


def test_step_breakdown_names_file_without_steps(tmp_path):
    path = tmp_path / "rank0.json"
    path.write_text(json.dumps({"traceEvents": []}))
    with pytest.raises(ValueError, match="contains no ProfilerStep spans"):
        step_breakdown(path)
