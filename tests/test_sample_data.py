"""sample_data/ is exactly what its README's commands regenerate."""

import hashlib
import re
from pathlib import Path

from typer.testing import CliRunner

from birdnerf.synthetic import SAMPLE_DATA, sample_dataset, shipped_sample
from birdnerf_cli.main import app


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_readme_commands_regenerate_sample_data_byte_for_byte(tmp_path):
    readme = (SAMPLE_DATA / "README.md").read_text()
    commands = re.findall(r"^birdnerf (sample-data .*)$", readme, flags=re.M)
    assert len(commands) == 2
    for command in commands:
        args = command.split()
        folder = Path(args[1])
        args[1] = str(tmp_path / folder.name)
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        committed = _hashes(SAMPLE_DATA.parent / folder)
        assert len(committed) > 10
        assert _hashes(tmp_path / folder.name) == committed, folder


def test_sample_dataset_copies_the_committed_files(tmp_path):
    for variant in ("base", "changed"):
        out = sample_dataset(tmp_path / variant, variant)
        assert _hashes(out) == _hashes(shipped_sample(variant))


def test_sample_dataset_renders_the_same_files_without_the_repository(tmp_path, monkeypatch):
    import birdnerf.synthetic.shipped as shipped

    committed = _hashes(SAMPLE_DATA / "corner")
    monkeypatch.setattr(shipped, "SAMPLE_DATA", tmp_path / "missing")
    assert shipped_sample("changed") is None
    assert _hashes(sample_dataset(tmp_path / "corner", "changed")) == committed
