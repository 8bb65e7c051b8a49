"""File-system errors are one line naming the file, and leave what was there intact: a full disk
(a real small tmpfs where the machine allows mounting one, and injected otherwise), a read-only
folder, a file where a folder belongs."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from birdnerf import atomic
from birdnerf.errors import BirdnerfError
from birdnerf_cli.main import app
from tests.test_bad_input import _camera_path, checksums, one_error_line, trained_copy  # noqa: F401 (fixture)


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if ".tmp" in p.name]


def test_an_atomic_write_that_fails_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    atomic.write_json(path, {"old": True})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(BirdnerfError) as err:
        atomic.write_json(path, {"new": True})
    assert str(err.value).startswith(f"{path}: no space left on the device (")
    assert "MB free there" in str(err.value) and "\n" not in str(err.value)
    assert path.read_text() == atomic.json.dumps({"old": True}, indent=2) + "\n"
    assert _no_temp_files(tmp_path)


def test_a_file_where_a_folder_belongs_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BirdnerfError, match="a part of this path is a file, not a folder while writing it"):
        atomic.write_json(tmp_path / "file" / "out.json", {})


def test_a_full_disk_during_eval_is_one_line_and_the_run_is_intact(trained_copy, monkeypatch):  # noqa: F811
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", full)
    before = checksums(trained_copy)
    one_error_line(CliRunner().invoke(app, ["eval", str(trained_copy)]), "no space left on the device")
    assert checksums(trained_copy) == before


def test_a_failed_checkpoint_write_is_one_line(mini_dataset, tmp_path, monkeypatch):
    from birdnerf.block import checkpoint as ckpt
    from birdnerf.partition import PartitionConfig, partition_dataset

    run = tmp_path / "run"
    partition_dataset(mini_dataset, run, PartitionConfig(blocks=(1, 1)))

    def torn(*args, **kwargs):  # what torch's writer raises when the disk fills mid-file
        raise RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file"
        )

    monkeypatch.setattr(ckpt.torch, "save", torn)
    args = [
        "train",
        str(run),
        "--steps",
        "4",
        "--rays",
        "128",
        "--backend",
        "torch",
        "--checkpoint-every",
        "2",
    ]
    one_error_line(CliRunner().invoke(app, args), "checkpoint.pt", "the write failed")
    assert (run / "partition.json").is_file() and _no_temp_files(run)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_real_full_disk(trained_copy, tmp_path):  # noqa: F811
    """The trained run on a tmpfs with 64 KiB to spare: ``eval`` runs out of space writing renders."""
    size = sum(p.stat().st_size for p in trained_copy.rglob("*") if p.is_file())
    mount = Path(tempfile.mkdtemp(dir=tmp_path))
    kib = size // 1024 + 64 + 4 * len(list(trained_copy.rglob("*")))  # files round up to 4 KiB pages
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(mount)]).returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        run = mount / "run"
        shutil.copytree(trained_copy, run)
        before = checksums(run)
        one_error_line(CliRunner().invoke(app, ["eval", str(run)]), "no space left on the device")
        after = checksums(run)  # renders finished before the disk filled stay, whole
        assert {name: after.get(name) for name in before} == before and _no_temp_files(run)
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_render_that_cannot_fit_is_refused_before_it_starts(trained_copy, tmp_path, monkeypatch):  # noqa: F811
    from birdnerf import resources

    path = _camera_path(tmp_path, width=8000, height=6000)
    monkeypatch.setattr(resources, "available_memory", lambda: 1 << 30)
    before = checksums(trained_copy)
    result = CliRunner().invoke(app, ["render", str(trained_copy), "--camera-path", str(path)])
    one_error_line(result, "8000x6000 px needs up to 2.9 GB of memory (1.0 GB available)", "smaller frames")
    assert checksums(trained_copy) == before
    monkeypatch.setattr(resources, "available_memory", lambda: None)
    monkeypatch.setattr(resources, "free_space", lambda folder: 100 << 20)
    result = CliRunner().invoke(app, ["render", str(trained_copy), "--camera-path", str(path)])
    one_error_line(result, "needs up to 595 MB of disk (100 MB free there)")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_read_only_output_folder_is_one_line(mini_dataset, tmp_path):
    mount = Path(tempfile.mkdtemp(dir=tmp_path))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(mount)]).returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        result = CliRunner().invoke(app, ["partition", str(mini_dataset), "-o", str(mount / "run")])
        one_error_line(result, str(mount / "run"), "Read-only file system")
    finally:
        subprocess.run(["umount", str(mount)], check=False)
