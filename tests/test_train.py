import dataclasses
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from birdnerf.block.checkpoint import block_dir, load_tensors
from birdnerf.block.prior import surface_prior
from birdnerf.composite import load_block_model
from birdnerf.errors import BirdnerfError
from birdnerf.eval.metrics import MIN_MARGIN_DB, baseline_psnr, psnr
from birdnerf.formats import BLOCK_CONFIG, BLOCK_DONE, read_record
from birdnerf.partition import PartitionConfig, load_scene, partition_dataset, read_partition
from birdnerf.train import RenderConfig, TrainConfig, train_block, train_run
from birdnerf.train.data import block_rays
from birdnerf.train.loop import build_model
from birdnerf.train.pixels import held_out_pixels
from birdnerf.train.quality import block_quality
from tests.conftest import MINI_STEPS, mini_train_config


def test_training_raises_held_out_psnr_well_above_the_start(mini_runs):
    run = mini_runs["split"]
    partition = read_partition(run)
    scene = load_scene(partition)
    block = partition.blocks[0]
    test = block_rays(scene, block, block.test_images)
    assert len(test) > 1000
    untrained = build_model(block, mini_train_config(), len(block.images))
    untrained.set_surface_prior(scene.points)
    before = psnr(untrained.render_eval(test.origins, test.dirs).rgb, test.rgb)
    after = psnr(load_block_model(run, block.id).render_eval(test.origins, test.dirs).rgb, test.rgb)
    # The pixels' own mean colour needs no model (measured: 21.0 dB against 15.9 dB; grey 14.0 dB).
    baseline = baseline_psnr(test.rgb)
    assert after > baseline + 3.0, (after, baseline)
    assert after > before + 5.0
    done = json.loads((block_dir(run, block.id) / "done.json").read_text())
    assert done["finished"] and done["step"] == MINI_STEPS
    # done.json scores the block the same way, on a subsample of the same pixels (measured +5.0 dB).
    quality = done["quality"]
    assert quality["scored"] == "held-out" and quality["pixels"] == min(4096, len(test))
    assert quality["baseline_psnr"] == pytest.approx(baseline, abs=0.3)
    assert quality["margin_db"] == pytest.approx(quality["psnr"] - quality["baseline_psnr"])
    assert quality["margin_db"] > 3.0
    # A block without test photos is scored on its training pixels, and says so.
    few = held_out_pixels(scene, block, block.images[:2])
    fallback = block_quality(untrained, scene, dataclasses.replace(block, test_images=[]), few, max_rays=512)
    assert fallback["scored"] == "training" and fallback["pixels"] == 512
    assert fallback["margin_db"] < MIN_MARGIN_DB  # an untrained model learned nothing
    rows = [
        json.loads(line) for line in (block_dir(run, block.id) / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [25, 50, 75, 100, 120]
    assert rows[-1]["psnr"] > rows[0]["psnr"] + 4.0


def test_finished_blocks_are_skipped(mini_runs):
    plans = []
    results = train_run(mini_runs["split"], mini_train_config(), on_plan=plans.extend)
    assert results == {}
    assert {p.action for p in plans} == {"skip-done"}


def test_resume_follows_the_same_trajectory(mini_dataset, tmp_path):
    config = dataclasses.replace(
        mini_train_config(),
        steps=20,
        checkpoint_every=10,
        log_every=5,
        rays_per_batch=256,
        samples_per_batch=4096,
    )
    partition, _ = partition_dataset(mini_dataset, tmp_path / "run", PartitionConfig(blocks=(1, 2)))
    scene = load_scene(partition)
    block = partition.blocks[1]
    train_block(tmp_path / "whole", scene, block, config)
    stopped = train_block(tmp_path / "cut", scene, block, config, stop_after=10)
    assert stopped == {"step": 10, "finished": False}
    train_block(tmp_path / "cut", scene, block, config, resume=True)
    whole = load_tensors(block_dir(tmp_path / "whole", block.id) / "model.pt")["model"]
    cut = load_tensors(block_dir(tmp_path / "cut", block.id) / "model.pt")["model"]
    assert whole.keys() == cut.keys()
    for key in whole:
        torch.testing.assert_close(cut[key], whole[key], rtol=0, atol=0, msg=key)
    lines = (block_dir(tmp_path / "cut", block.id) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [5, 10, 15, 20]


def test_a_killed_training_resumes_from_its_checkpoint(mini_dataset, tmp_path):
    run = tmp_path / "run"
    partition_dataset(mini_dataset, run, PartitionConfig(blocks=(1, 1)))
    cmd = [
        sys.executable,
        "-m",
        "birdnerf_cli",
        "train",
        str(run),
        "--steps",
        "400",
        "--backend",
        "torch",
        "--rays",
        "64",
        "--checkpoint-every",
        "5",
        "--lr",
        "0.05",
        "--mlp-lr",
        "0.002",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = block_dir(run, "r00c00") / "checkpoint.pt"
    deadline = time.time() + 400
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "no checkpoint was written before the deadline"
    step = int(load_tensors(checkpoint)["step"])
    assert 0 < step < 400
    assert not (block_dir(run, "r00c00") / "done.json").exists()
    assert not list(block_dir(run, "r00c00").glob(".*.tmp*"))  # nothing half-written left behind
    recorded = json.loads((block_dir(run, "r00c00") / "config.json").read_text())["train"]
    assert (recorded["lr"], recorded["mlp_lr"]) == (0.05, 0.002)
    # Other learning rates would train the rest differently from the start: refused, named.
    other = dataclasses.replace(TrainConfig(), steps=step + 10, rays_per_batch=64, backend="torch")
    with pytest.raises(BirdnerfError, match=r"other settings \(lr 0.05 -> 0.2; mlp_lr 0.002 -> 0.005\)"):
        train_run(run, other)
    config = dataclasses.replace(other, lr=0.05, mlp_lr=0.002, checkpoint_every=5)
    plans = []
    train_run(run, config, on_plan=plans.extend)
    assert [p.action for p in plans] == ["resume"]
    assert read_record(block_dir(run, "r00c00") / "done.json", BLOCK_DONE)["step"] == step + 10
    record = read_record(block_dir(run, "r00c00") / "config.json", BLOCK_CONFIG)
    assert record["resumed"] == [{"step": step, "changed": {"steps": [400, step + 10]}}]
    assert record["train"]["steps"] == step + 10


def test_surface_prior_keeps_a_shell_around_the_points():
    # A dense patch of points at z ~ 1.1 around column (5, 5), on a 0.5 m grid of 1 m columns.
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(4.0, 7.0, (40, 2)), rng.uniform(1.0, 1.2, 40)]
    mask = surface_prior(points, [0, 0, -2, 20, 20, 8], (20, 20, 20), radius=1, margin_cells=1.0)
    z_centers = -2 + (torch.arange(20) + 0.5) * 0.5
    column = mask[5, 5]
    assert column[(z_centers - 1.1).abs() < 0.3].all()  # around the points: kept
    assert not column[z_centers > 3].any() and not column[z_centers < -1].any()  # far above/below: empty
    assert mask[15, 15].all()  # no points nearby: nothing is ruled out


def test_surface_prior_dilates_where_points_are_sparse():
    box, res = [0, 0, -2, 20, 20, 8], (20, 20, 20)
    z_centers = -2 + (torch.arange(20) + 0.5) * 0.5
    # Ground at z = 0 seen through many points, and through one point in every third column.
    dense = np.array([[x + 0.5, y + 0.5, 0.0] for x in range(20) for y in range(20)] * 2)
    sparse = np.array([[x + 0.5, y + 0.5, 0.0] for x in range(0, 20, 3) for y in range(0, 20, 3)])
    thin = surface_prior(dense, box, res, radius=1, margin_cells=1.0)
    thick = surface_prior(sparse, box, res, radius=1, margin_cells=1.0)
    assert thin[9, 9].sum() == 2 and thin[9, 9][z_centers.abs() < 0.3].all()  # +-1 cell: +-0.5 m
    # A few points say less: the shell keeps cells further above and below them.
    assert thick[9, 9].sum() > thin[9, 9].sum() and thick[9, 9][(z_centers - 1.0).abs() < 0.3].all()
    assert not thick[9, 9][z_centers > 2.0].any()


@pytest.mark.parametrize("bad", ["not a checkpoint", b"\x80\x04\x95 pickle"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, bad):
    from birdnerf.errors import BirdnerfError

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(bad.encode() if isinstance(bad, str) else bad)
    with pytest.raises(BirdnerfError, match="unreadable checkpoint"):
        load_tensors(path)


def _tiny_config() -> TrainConfig:
    """A few cheap steps (a coarse occupancy grid: its first full update dominates short runs)."""
    return dataclasses.replace(
        mini_train_config(),
        steps=12,
        checkpoint_every=6,
        log_every=4,
        rays_per_batch=256,
        samples_per_batch=4096,
        render=RenderConfig(occupancy_resolution=16),
    )


def _deterministic_rows(run, block_id: str) -> list[dict]:
    """Logged rows without the timing columns."""
    lines = (block_dir(run, block_id) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if not k.endswith("_per_s")} for x in lines]


def test_parallel_jobs_train_every_block_like_a_sequential_run(mini_dataset, tmp_path):
    """Two spawned workers (one torch thread each) give the same blocks, bit for bit, as a
    sequential run with one thread: training is seeded per block and shares no state."""
    config = _tiny_config()
    runs = {}
    threads_before = torch.get_num_threads()
    events: dict[str, list[int]] = {}
    try:
        for jobs in (1, 2):
            run = tmp_path / f"jobs{jobs}"
            partition_dataset(mini_dataset, run, PartitionConfig(blocks=(1, 2)))
            progress = (
                (lambda b, done, total, info: events.setdefault(b, []).append(done)) if jobs == 2 else None
            )
            runs[jobs] = (run, train_run(run, config, jobs=jobs, threads=1, on_progress=progress))
    finally:
        torch.set_num_threads(threads_before)
    (seq_run, seq), (par_run, par) = runs[1], runs[2]
    ids = [b.id for b in read_partition(par_run).blocks]
    assert len(ids) == 2 and sorted(par) == sorted(seq) == sorted(ids)
    assert {b: steps[-1] for b, steps in events.items()} == {b: config.steps for b in ids}  # via the queue
    for block_id in ids:
        assert par[block_id]["finished"] and par[block_id]["step"] == config.steps
        untimed = ("seconds",)
        assert {k: v for k, v in par[block_id].items() if k not in untimed} == {
            k: v for k, v in seq[block_id].items() if k not in untimed
        }
        assert (block_dir(par_run, block_id) / "done.json").exists()
        assert _deterministic_rows(par_run, block_id) == _deterministic_rows(seq_run, block_id)
        a = load_tensors(block_dir(seq_run, block_id) / "model.pt")["model"]
        b = load_tensors(block_dir(par_run, block_id) / "model.pt")["model"]
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def test_max_seconds_ends_training_like_the_last_step(mini_dataset, tmp_path):
    config = dataclasses.replace(_tiny_config(), steps=10**6, max_seconds=0.5)
    run = tmp_path / "run"
    partition, _ = partition_dataset(mini_dataset, run, PartitionConfig(blocks=(1, 1)))
    result = train_block(run, load_scene(partition), partition.blocks[0], config)
    folder = block_dir(run, partition.blocks[0].id)
    assert result["finished"] and result["stopped_by"] == "time"
    assert 0 < result["step"] < config.steps and result["seconds"] >= 0.5 and result["rays_trained"] > 0
    assert read_record(folder / "done.json", BLOCK_DONE) == result
    assert load_tensors(folder / "checkpoint.pt")["step"] == result["step"]
    assert (folder / "model.pt").exists()
    last_row = _deterministic_rows(run, partition.blocks[0].id)[-1]
    assert last_row["step"] == result["step"]
    assert last_row["lr"] == pytest.approx(config.lr * config.lr_decay)  # decayed over the time, not steps
    plans = []
    assert train_run(run, config, on_plan=plans.extend) == {}
    assert [p.action for p in plans] == ["skip-done"]


def test_train_warns_about_a_block_that_learned_nothing(mini_dataset, tmp_path):
    """Two steps teach a block nothing: the command says so, and done.json records why."""
    from typer.testing import CliRunner

    import birdnerf_cli.main

    run = tmp_path / "run"
    partition_dataset(mini_dataset, run, PartitionConfig(blocks=(1, 1)))
    args = ["train", str(run), "--steps", "2", "--rays", "256", "--backend", "torch"]
    result = CliRunner().invoke(birdnerf_cli.main.app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "warning: block r00c00" in text and "learned nothing useful" in text
    assert "ground height" in text and "--steps" in text
    assert "no block beats the mean-colour baseline" in text
    quality = json.loads((block_dir(run, "r00c00") / "done.json").read_text())["quality"]
    assert quality["scored"] == "held-out" and quality["pixels"] > 0
    assert quality["margin_db"] < MIN_MARGIN_DB
