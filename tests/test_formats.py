"""Versioned run files: round trip, a newer version or another kind is one clear line, a file from
before versions is read, unknown fields are named."""

from __future__ import annotations

import json

import pytest
import torch

from birdnerf.block import checkpoint as ckpt
from birdnerf.errors import BirdnerfError
from birdnerf.formats import BLOCK_CONFIG, BLOCK_DONE, EVAL, build, read_record, write_record
from birdnerf.partition.manifest import read_partition
from birdnerf.train import TrainConfig


@pytest.mark.parametrize("fmt", [BLOCK_CONFIG, BLOCK_DONE, EVAL])
def test_a_record_round_trips_with_its_kind_and_version(tmp_path, fmt):
    path = tmp_path / "record.json"
    write_record(path, fmt, {"step": 3, "psnr": 21.5})
    raw = json.loads(path.read_text())
    assert (raw["format"], raw["format_version"]) == (fmt.kind, fmt.version)
    assert read_record(path, fmt) == {"step": 3, "psnr": 21.5}


def test_a_newer_version_names_the_file_and_both_versions(tmp_path):
    path = tmp_path / "done.json"
    path.write_text(json.dumps({"format": BLOCK_DONE.kind, "format_version": BLOCK_DONE.version + 1}))
    with pytest.raises(BirdnerfError) as err:
        read_record(path, BLOCK_DONE)
    line = str(err.value)
    assert "\n" not in line and "done.json" in line
    assert f"version {BLOCK_DONE.version + 1}" in line and f"up to version {BLOCK_DONE.version}" in line


def test_a_file_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "eval.json"
    write_record(path, BLOCK_DONE, {"step": 1})
    with pytest.raises(BirdnerfError, match="a birdnerf.block.done file where a birdnerf.eval file belongs"):
        read_record(path, EVAL)


def test_a_record_from_before_versions_is_read(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train": {"steps": 7}}))  # version 0: no format keys, fewer fields
    record = read_record(path, BLOCK_CONFIG)
    config = build(TrainConfig.from_dict, record["train"], path, "training settings")
    assert config.steps == 7 and config.lr == TrainConfig().lr  # missing fields take their defaults


def test_unknown_fields_are_named_not_dropped(tmp_path):
    path = tmp_path / "config.json"
    with pytest.raises(BirdnerfError, match=r"unreadable training settings: unknown training settings: warp"):
        build(TrainConfig.from_dict, {"steps": 5, "warp": 9}, path, "training settings")
    with pytest.raises(BirdnerfError, match="unreadable model record"):
        build(TrainConfig.from_dict, {"field": {"hidden": 3}}, path, "model record")
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


def test_weight_files_carry_their_format(tmp_path):
    path = tmp_path / "model.pt"
    ckpt.save_tensors(path, {"model": {"w": torch.ones(2)}, "step": 4})
    assert ckpt.load_tensors(path)["step"] == 4 and "format" not in ckpt.load_tensors(path)
    torch.save({"model": {}, "format": "birdnerf.block.weights", "format_version": 99}, path)
    with pytest.raises(BirdnerfError, match="version 99 was written by a newer birdnerf"):
        ckpt.load_tensors(path)
    torch.save({"model": {"w": torch.zeros(1)}}, path)  # written before weights carried a version
    assert set(ckpt.load_tensors(path)) == {"model"}


def test_a_newer_partition_manifest_says_so(tmp_path):
    (tmp_path / "partition.json").write_text(
        json.dumps({"schema": "birdnerf.partition", "schema_version": 99})
    )
    with pytest.raises(BirdnerfError, match="version 99 was written by a newer birdnerf"):
        read_partition(tmp_path)
