"""Per-block updates: only touched blocks retrain, versions are kept, interruptions are safe."""

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from birdnerf.errors import BirdnerfError
from birdnerf.eval import score_dataset
from birdnerf.geo.enu import GeoPoint, enu_to_enu, enu_to_geodetic, geodetic_to_enu
from birdnerf.partition import PartitionConfig, load_scene, partition_dataset, read_partition
from birdnerf.scene.load import load_dataset
from birdnerf.scene.nerfstudio import write_transforms
from birdnerf.update import UpdateOptions, list_versions, prepare_update, rollback, run_info, update_run
from birdnerf.update.versions import STAGED, history_path
from tests.conftest import mini_train_config

BASE_STEPS = 30
UPDATE_STEPS = 90
"""The new corner's blocks train longer than the brief base run, so its gain is clear (+1.65 dB)."""
# sample_data/: narrow photos (40 m x 30 m footprints) over a 150 m site cut 3 x 3: the changed
# corner's photos reach only the blocks around it.
TOUCHED = {"r01c01", "r01c02", "r02c01", "r02c02"}


def _config():
    """Brief training; a coarse occupancy grid (its full refreshes dominate such short runs)."""
    from birdnerf.train import RenderConfig

    return dataclasses.replace(
        mini_train_config(),
        steps=BASE_STEPS,
        rays_per_batch=512,
        samples_per_batch=1 << 14,
        render=RenderConfig(occupancy_resolution=32),
    )


@pytest.fixture(scope="module")
def site_data(tmp_path_factory) -> dict[str, Path]:
    """The survey in sample_data/ and the photos of its changed corner."""
    from birdnerf.synthetic import sample_dataset

    root = tmp_path_factory.mktemp("update")
    sample_dataset(root / "base")
    sample_dataset(root / "changed", "changed")
    return {"base": root / "base", "changed": root / "changed"}


@pytest.fixture(scope="module")
def site(site_data) -> dict[str, Path]:
    """The survey cut 3 x 3 and trained briefly, with its data."""
    from birdnerf.train import train_run

    run = site_data["base"].parent / "run"
    # Boxes capped by the points (no headroom), so that the changed corner's 20 m building sticks
    # out of its block's box, as it would out of a run partitioned before boxes had headroom.
    partition_dataset(site_data["base"], run, PartitionConfig(blocks=(3, 3), headroom=0.0))
    train_run(run, _config())
    return {**site_data, "run": run}


@pytest.fixture
def run(site, tmp_path) -> Path:
    """A private copy of the trained run."""
    shutil.copytree(site["run"], tmp_path / "run")
    return tmp_path / "run"


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _changed_area_psnr(run: Path, changed: Path) -> float:
    """Mean PSNR of the changed corner's held-out photos rendered from the run's current blocks."""
    return float(np.mean(score_dataset(run, changed)))


def test_plan_touches_only_the_blocks_the_new_photos_cover(run, site):
    plan = prepare_update(run, site["changed"], UpdateOptions())
    assert set(plan.retrain) == TOUCHED
    assert len(plan.added) == 16 and all(n.startswith("v2/images/change_") for n in plan.added)
    # The 20 m building in the corner is taller than the old box: that block restarts from scratch.
    corner = plan.partition.block("r02c02")
    assert plan.retrain["r02c02"] == "from-scratch" and corner.box[5] > 20.0
    assert {b for b, m in plan.retrain.items() if m == "fine-tune"} == TOUCHED - {"r02c02"}
    for block in plan.partition.blocks:
        assert block.revision == (2 if block.id in TOUCHED else 1)
        assert any(n.startswith("v2/") for n in block.images) == (block.id in TOUCHED)
    assert not plan.created and not plan.unused
    assert read_partition(run).version == 1  # planning writes nothing
    assert not (run / STAGED).exists()


def test_update_retrains_touched_blocks_and_leaves_the_rest_bit_identical(run, site):
    before = {d.name: _hashes(d) for d in (run / "blocks").iterdir()}
    manifest_v1 = (run / "partition.json").read_bytes()
    psnr_before = _changed_area_psnr(run, site["changed"])

    plan = update_run(run, site["changed"], UpdateOptions(steps=UPDATE_STEPS))

    assert plan.partition.version == 2 and read_partition(run).version == 2
    after = {d.name: _hashes(d) for d in (run / "blocks").iterdir()}
    # Every folder of version 1 is byte-for-byte as it was, touched or not (rollback needs them).
    assert all(after[name] == files for name, files in before.items())
    assert set(after) - set(before) == {f"{b}.v2" for b in TOUCHED}
    for block_id in TOUCHED:
        assert json.loads((run / "blocks" / f"{block_id}.v2" / "done.json").read_text())["finished"]
    assert history_path(run, 1).read_bytes() == manifest_v1
    # The renderer picks up the new blocks: the corner now shows its new buildings.
    psnr_after = _changed_area_psnr(run, site["changed"])
    assert psnr_after > psnr_before + 1.0, (psnr_before, psnr_after)

    info = run_info(run)
    assert info["version"] == 2 and len(info["datasets"]) == 2
    assert [h["kind"] for h in info["history"]] == ["partition", "update"]
    assert {b["id"]: b["revision"] for b in info["blocks"]}["r02c02"] == 2

    restored = rollback(run, 1)
    assert restored.version == 3 and [b.revision for b in restored.blocks] == [1] * 9
    assert _changed_area_psnr(run, site["changed"]) == pytest.approx(psnr_before, abs=1e-6)
    assert [p.version for p in list_versions(run)] == [1, 2, 3]
    # Roll forward again: version 2's folders are still there.
    assert rollback(run, 2).version == 4
    assert _changed_area_psnr(run, site["changed"]) == pytest.approx(psnr_after, abs=1e-6)


def test_update_refuses_photos_already_in_the_run(run, site):
    with pytest.raises(BirdnerfError, match="already in the run"):
        prepare_update(run, site["base"], UpdateOptions())


def test_replace_older_retires_old_photos_of_the_changed_area(run, site):
    plan = prepare_update(run, site["changed"], UpdateOptions(replace_older=True))
    assert plan.removed and set(plan.partition.retired) == set(plan.removed)
    old = load_scene(read_partition(run))
    from birdnerf.partition import compute_footprints

    centers = dict(zip(old.names, compute_footprints(old).center, strict=True))
    changed_centers = np.array([centers[n] for n in plan.removed])
    assert changed_centers.min() > 0  # every retired photo looks at the +x/+y corner
    for block in plan.partition.blocks:
        if block.id in plan.retrain:
            assert not set(plan.removed) & set(block.images + block.test_images)


def _half(data: Path, out: Path, west: bool) -> Path:
    """The photos of ``data`` whose camera is west (x < -20 m) or east of that line, as a dataset."""
    scene = load_dataset(data)
    keep = [i for i in range(len(scene)) if (scene.centers[i, 0] < -20.0) == west]
    sub = scene.subset(keep)
    for path in sub.image_paths:
        target = out / path.relative_to(scene.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    paths = [out / p.relative_to(scene.root) for p in sub.image_paths]
    sub = dataclasses.replace(sub, root=out, image_paths=paths, depth_paths=None)
    write_transforms(sub, out / "transforms.json")
    return out


def test_photos_beyond_the_grid_make_new_blocks_with_stable_ids(site_data, tmp_path):
    west = _half(site_data["base"], tmp_path / "west", west=True)
    east = _half(site_data["base"], tmp_path / "east", west=False)
    partition, _ = partition_dataset(west, tmp_path / "run", PartitionConfig(blocks=(2, 1)))
    ids = [b.id for b in partition.blocks]
    plan = prepare_update(tmp_path / "run", east, UpdateOptions())
    new = plan.partition
    assert plan.created and all(b.startswith("r") and "c0" in b for b in plan.created)
    assert [b.id for b in new.blocks if b.id in ids] == ids  # old ids keep their meaning
    assert len(new.x_edges) > len(partition.x_edges)
    np.testing.assert_allclose(new.x_edges[: len(partition.x_edges)], partition.x_edges, atol=1e-5)
    for block_id in plan.created:
        block = new.block(block_id)
        assert plan.retrain[block_id] == "from-scratch" and block.core[0] >= partition.x_edges[-1] - 1e-5
        assert len(block.images) >= 2
    assert not plan.unused


def test_enu_to_enu_moves_points_between_origins():
    a, b = GeoPoint(50.82, -0.137, 10.0), GeoPoint(50.821, -0.135, 12.0)
    points = np.array([[0.0, 0.0, 0.0], [120.0, -40.0, 15.0], [-300.0, 250.0, 2.0]])
    moved = points @ enu_to_enu(a, b)[:3, :3].T + enu_to_enu(a, b)[:3, 3]
    lat, lon, alt = enu_to_geodetic(points, a)
    np.testing.assert_allclose(moved, geodetic_to_enu(lat, lon, alt, b), atol=1e-6)


UPDATE_SCRIPT = """
import sys
from birdnerf.update import UpdateOptions, update_run
update_run(sys.argv[1], sys.argv[2], UpdateOptions(steps=int(sys.argv[3])))
"""


def test_an_interrupted_update_leaves_the_old_version_and_resumes(run, site):
    manifest_v1 = (run / "partition.json").read_bytes()
    # The first block checkpoints at step 50 of 60; the kill lands before the fourth block is done.
    cmd = [sys.executable, "-c", UPDATE_SCRIPT, str(run), str(site["changed"]), "60"]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1])
    deadline = time.time() + 300
    while not list((run / "blocks").glob("*.v2/checkpoint.pt")) and time.time() < deadline:
        assert proc.poll() is None, "the update ended before it could be interrupted"
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert (run / "partition.json").read_bytes() == manifest_v1
    assert run_info(run)["interrupted_update"] and run_info(run)["version"] == 1
    finished = {d.name: _hashes(d) for d in (run / "blocks").glob("*.v2") if (d / "done.json").exists()}
    assert len(finished) < len(TOUCHED)

    # The same update again resumes the staged version (finished blocks are kept) and commits it.
    plan = update_run(run, site["changed"], UpdateOptions(steps=60))
    assert read_partition(run).version == 2 and not (run / STAGED).exists()
    assert set(plan.retrain) == TOUCHED
    assert all(_hashes(run / "blocks" / name) == files for name, files in finished.items())


def test_an_update_whose_training_cannot_fit_is_refused_before_it_is_staged(run, site, monkeypatch):
    from birdnerf import resources

    before = _hashes(run)
    monkeypatch.setattr(resources, "available_memory", lambda: 64 << 20)
    with pytest.raises(
        BirdnerfError, match=r"training \(.* rays and .* samples a step\) needs up to .* of memory"
    ):
        update_run(run, site["changed"], UpdateOptions(steps=5))
    assert _hashes(run) == before and not (run / STAGED).exists()


def test_a_failed_commit_leaves_the_old_version(run, site, monkeypatch):
    import birdnerf.update.versions as versions

    manifest_v1 = (run / "partition.json").read_bytes()
    real_replace = versions.os.replace

    def crash(src, dst):
        if Path(dst).name == "partition.json":
            raise KeyboardInterrupt  # the process dies just before the rename
        real_replace(src, dst)

    monkeypatch.setattr(versions.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        update_run(run, site["changed"], UpdateOptions(steps=5))
    assert (run / "partition.json").read_bytes() == manifest_v1
    monkeypatch.setattr(versions.os, "replace", real_replace)
    # A different update (other steps) discards the staged one and its folders, then commits.
    update_run(run, site["changed"], UpdateOptions(steps=6))
    partition = read_partition(run)
    assert partition.version == 2
    done = json.loads((run / "blocks" / "r02c02.v2" / "done.json").read_text())
    assert done["step"] == 6


def test_cli_info_and_rollback(run, site):
    from typer.testing import CliRunner

    from birdnerf_cli.main import app

    cli = CliRunner()
    again = cli.invoke(app, ["update", str(run), "--add", str(site["base"])])
    assert again.exit_code == 1 and "already in the run" in again.output
    assert len([line for line in again.output.splitlines() if line.strip()]) <= 2
    result = cli.invoke(app, ["update", str(run), "--add", str(site["changed"]), "--steps", "5"])
    assert result.exit_code == 0, result.output
    assert "version 2 is current" in result.output
    info = cli.invoke(app, ["info", str(run)])
    assert info.exit_code == 0 and "retrained" in info.output and "(current)" in info.output
    back = cli.invoke(app, ["update", str(run), "--rollback", "1"])
    assert back.exit_code == 0 and "restored version 1" in back.output
    as_json = json.loads(cli.invoke(app, ["info", str(run), "--json"]).output)
    assert as_json["version"] == 3 and [h["kind"] for h in as_json["history"]][-1] == "rollback"
    bad = cli.invoke(app, ["update", str(run), "--rollback", "7"])
    assert bad.exit_code == 1 and "cannot roll back" in bad.output


def test_georeferenced_photos_are_moved_into_the_runs_enu_frame(site_data):
    from birdnerf.update.update import source_transform

    raw = load_dataset(site_data["changed"])
    base_geo = {"frame": "ENU", "lat": 50.82, "lon": -0.137, "alt": 10.0}
    load = np.diag([1.0, 1.0, 1.0, 1.0])
    load[:3, 3] = [5.0, -2.0, 0.5]
    frame = {"load_transform": load.tolist()}
    assert np.array_equal(source_transform(frame, base_geo, raw), load)  # no geo: the run's frame
    raw.geo = {"frame": "ENU", "lat": 50.8205, "lon": -0.1365, "alt": 12.0}
    moved = source_transform(frame, base_geo, raw)
    origin = GeoPoint(raw.geo["lat"], raw.geo["lon"], raw.geo["alt"])
    # The new dataset's origin lands where the run's ENU frame puts that geodetic point.
    expected = geodetic_to_enu(origin.lat, origin.lon, origin.alt, GeoPoint(50.82, -0.137, 10.0))
    np.testing.assert_allclose(moved[:3, 3], expected + load[:3, 3], atol=1e-6)


def test_photos_that_reach_no_block_are_a_clear_error(run, site, tmp_path):
    far = tmp_path / "far"
    scene = load_dataset(site["changed"])
    one = scene.subset([0])
    shift = np.eye(4)
    shift[0, 3] = 2000.0  # 2 km east of the site: beyond every block, and alone
    moved = one.transformed(shift)
    target = far / one.image_paths[0].relative_to(scene.root)
    target.parent.mkdir(parents=True)
    shutil.copyfile(one.image_paths[0], target)
    moved = dataclasses.replace(moved, root=far, image_paths=[target], depth_paths=None)
    write_transforms(moved, far / "transforms.json")
    with pytest.raises(BirdnerfError, match="none of these photos fall on the run's blocks"):
        prepare_update(run, far, UpdateOptions())
    assert not (run / STAGED).exists() and read_partition(run).version == 1


def _moved_copy(data: Path, out: Path, shift_x: float = 0.0, geo: dict | None = None) -> Path:
    """A copy of the dataset ``data`` (same photo files) moved ``shift_x`` metres east, with ``geo``."""
    scene = load_dataset(data)
    shift = np.eye(4)
    shift[0, 3] = shift_x
    for path in scene.image_paths:
        target = out / path.relative_to(scene.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    paths = [out / p.relative_to(scene.root) for p in scene.image_paths]
    moved = dataclasses.replace(scene.transformed(shift), root=out, image_paths=paths, depth_paths=None)
    write_transforms(moved, out / "transforms.json")
    if geo:  # the dataset's own georeference: its frame is a local ENU frame around ``geo``
        meta = json.loads((out / "transforms.json").read_text())
        meta["birdnerf"] = {"world_frame": True, "geo": geo}
        (out / "transforms.json").write_text(json.dumps(meta))
    return out


def test_update_refuses_a_copied_folder_of_photos_already_in_the_run(run, site, tmp_path):
    copy = _moved_copy(site["base"], tmp_path / "copy")
    with pytest.raises(BirdnerfError, match=r"of these \d+ photos are already in the run or repeated"):
        prepare_update(run, copy, UpdateOptions())


def test_update_refuses_georeferenced_photos_for_a_local_run(run, site, tmp_path):
    geo = {"frame": "ENU", "lat": 50.82, "lon": -0.137, "alt": 10.0}
    other = _moved_copy(site["changed"], tmp_path / "geo", geo=geo)
    with pytest.raises(BirdnerfError, match="these photos are georeferenced but the run is not"):
        prepare_update(run, other, UpdateOptions())


def test_photos_far_from_the_site_need_allow_new_area(run, site, tmp_path):
    far = _moved_copy(site["changed"], tmp_path / "far", shift_x=1000.0)
    with pytest.raises(BirdnerfError, match="touch none of the run's blocks.*--allow-new-area"):
        prepare_update(run, far, UpdateOptions())
    plan = prepare_update(run, far, UpdateOptions(allow_new_area=True))
    assert plan.created and set(plan.retrain) == set(plan.created)
    assert not (run / STAGED).exists() and read_partition(run).version == 1


def test_update_with_ray_retrains_the_touched_blocks_as_ray_tasks(run, site):
    """`birdnerf update --ray` (a Ray instance on this machine) retrains the same blocks as the
    local runner would and commits the new version; untouched blocks keep their bytes."""
    pytest.importorskip("ray")
    before = {d.name: _hashes(d) for d in (run / "blocks").iterdir()}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "birdnerf_cli",
            "update",
            str(run),
            "--add",
            str(site["changed"]),
            "--steps",
            "8",
            "--threads",
            "1",
            "--ray",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert read_partition(run).version == 2
    after = {d.name: _hashes(d) for d in (run / "blocks").iterdir()}
    assert all(after[name] == files for name, files in before.items())
    assert set(after) - set(before) == {f"{b}.v2" for b in TOUCHED}
    for block_id in TOUCHED:
        assert json.loads((run / "blocks" / f"{block_id}.v2" / "done.json").read_text())["step"] == 8
