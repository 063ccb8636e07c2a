"""Real torchrun runs of the distributed training workers (2 CPU processes, gloo)."""

from __future__ import annotations

import json

import pytest

from helpers.distributed.launch import run_workers, torchrun_command
from helpers.distributed.trace import step_breakdown

SMALL = ["--n-train", "1024", "--n-test", "1000", "--epochs", "2", "--batch-size", "32", "--checkpoint-every", "4"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    run = run_workers("ddp", [*SMALL, "--profile-dir", str(folder / "traces"), "--profile-steps", "3"])
    return run, folder


def test_ddp_ranks_hold_identical_parameters(baseline):
    results = baseline[0].results
    assert results["world_size"] == 2
    assert len(results["parameter_hashes"]) == 2
    assert results["hashes_equal"], results["parameter_hashes"]


def test_ddp_shards_disjoint_and_cover(baseline):
    shards = baseline[0].results["shards"]
    assert shards["sizes"] == [512, 512]
    assert shards["disjoint"]
    assert shards["covers"]


def test_ddp_learns(baseline):
    results = baseline[0].results
    assert results["epoch_losses"][-1] < results["epoch_losses"][0]
    assert results["test_accuracy"] > 0.8, results["test_accuracy"]


def test_ddp_output_only_rank0(baseline):
    lines = baseline[0].rank0_lines()
    assert lines == [line for line in lines if line.startswith("epoch ")]
    assert len(lines) == 2


def test_trace_per_rank_has_comm(baseline):
    folder = baseline[1] / "traces"
    for rank in (0, 1):
        rows = step_breakdown(folder / f"rank{rank}.json")
        assert len(rows) == 3
        assert all(row["comm_ms"] > 0 for row in rows)
        assert all(row["compute_ms"] >= 0 for row in rows)


@pytest.fixture(scope="module")
def recovered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp-kill")
    return run_workers(
        "ddp", [*SMALL, "--checkpoint", str(folder / "ckpt.pt")],
        max_restarts=1, env={"DIST_KILL_AT_STEP": "10"}, rank0_only=False,
    )


def test_kill_restart_resumes_from_checkpoint(recovered):
    results = recovered.results
    assert "fault injection: SIGKILL at step 10" in recovered.stdout
    assert results["restart_count"] == 1
    assert results["resumed_from_step"] == 8
    assert results["steps"] == results["total_steps"]


def test_kill_restart_matches_uninterrupted(baseline, recovered):
    expected = baseline[0].results
    assert abs(recovered.results["test_accuracy"] - expected["test_accuracy"]) <= 0.005
    assert recovered.results["parameter_hashes"] == expected["parameter_hashes"]


def test_kill_without_restarts_fails(tmp_path):
    with pytest.raises(RuntimeError, match="exited with status"):
        run_workers("ddp", [*SMALL, "--epochs", "1"], env={"DIST_KILL_AT_STEP": "2"}, timeout_s=120)


def test_command_rejects_unknown_module():
    with pytest.raises(ValueError, match="unknown worker module 'train'"):
        torchrun_command("train")


def test_command_rejects_bad_nproc():
    with pytest.raises(ValueError, match="nproc must be a positive integer"):
        torchrun_command("ddp", nproc=0)


def test_step_breakdown_merges_overlaps(tmp_path):
    events = [
        {"ph": "X", "name": "ProfilerStep#1", "ts": 0, "dur": 10_000},
        {"ph": "X", "name": "gloo:all_reduce", "ts": 2_000, "dur": 4_000},
        {"ph": "X", "name": "gloo:all_reduce", "ts": 5_000, "dur": 2_000},
        {"ph": "X", "name": "aten::mm", "ts": 1_000, "dur": 500},
    ]
    path = tmp_path / "rank0.json"
    path.write_text(json.dumps({"traceEvents": events}))
    (row,) = step_breakdown(path)
    assert row["step_ms"] == 10.0
    assert row["comm_ms"] == 5.0
    assert row["compute_ms"] == 5.0


def test_step_breakdown_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="--profile-dir"):
        step_breakdown(tmp_path / "absent.json")
