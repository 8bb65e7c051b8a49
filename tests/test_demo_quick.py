"""`birdnerf demo --quick` starts from the survey in sample_data/: nothing is rendered first."""

import hashlib

import pytest
from typer.testing import CliRunner

import birdnerf.demo
from birdnerf.demo import QUICK_STEPS, quick_config
from birdnerf.synthetic import SAMPLE_SEED, shipped_sample
from birdnerf_cli.main import app


def _hashes(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_quick_config_is_the_committed_survey_in_brief():
    config = quick_config()
    assert config.scene == "sample" and config.seed == SAMPLE_SEED and config.steps == QUICK_STEPS
    train = config.train_config()
    assert train.steps == QUICK_STEPS and train.backend == "torch" and train.samples_per_batch <= 1 << 14


@pytest.mark.slow
def test_demo_quick_copies_sample_data_and_runs(tmp_path, monkeypatch):
    def no_rendering(*args, **kwargs):
        raise AssertionError("the quick demo rendered a scene")

    monkeypatch.setattr(birdnerf.demo, "generate_sample_scene", no_rendering)
    result = CliRunner().invoke(app, ["demo", "--quick", "--steps", "3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert _hashes(tmp_path / "data") == _hashes(shipped_sample("base"))
    assert sorted(p.name for p in (tmp_path / "run/blocks").iterdir()) == [
        "r00c00",
        "r00c01",
        "r01c00",
        "r01c01",
    ]
    assert (tmp_path / "run/eval.json").is_file() and "held-out PSNR" in result.output
