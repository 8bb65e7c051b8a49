"""Devices and hash-grid layouts: what a block records, what loads where, and CUDA parity.

The CUDA tests skip without a CUDA device; the tinycudann parity test also needs tinycudann.
``benchmarks/gpu_check.sh`` runs them on a GPU machine.
"""

import dataclasses
import json

import numpy as np
import pytest
import torch

from birdnerf.block.checkpoint import block_dir
from birdnerf.block.model import backend_for_layout, load_trained_model
from birdnerf.composite import BlockCache, render_view
from birdnerf.errors import BirdnerfError
from birdnerf.field import HashGridConfig, tcnn_available
from birdnerf.field.tcnn_layout import encode_tcnn_reference, tcnn_levels, tcnn_param_count
from birdnerf.partition import PartitionConfig, partition_dataset
from birdnerf.train import train_block
from tests.conftest import mini_train_config

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
STEPS = 40


def short_config(device: str):
    return dataclasses.replace(mini_train_config(), steps=STEPS, checkpoint_every=STEPS, device=device)


@pytest.fixture(scope="module")
def one_block(mini_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("device") / "run"
    partition, scene = partition_dataset(mini_dataset, run, PartitionConfig(blocks=(1, 1)))
    return run, partition, scene


@pytest.fixture(scope="module")
def cpu_trained(one_block):
    run, partition, scene = one_block
    result = train_block(run, scene, partition.blocks[0], short_config("cpu"))
    return run, partition, scene, result


def test_a_block_records_its_backend_and_layout_and_old_records_still_load(cpu_trained):
    run, partition, _, _ = cpu_trained
    folder = block_dir(run, partition.blocks[0].id)
    record = json.loads((folder / "config.json").read_text())
    assert record["backend"] == "torch" and record["layout"] == "reference" and record["device"] == "cpu"
    assert not (folder / "pixels.rgb").exists()  # a finished block drops its colour cache
    reference = load_trained_model(folder).state_dict()
    for key in ("backend", "layout", "device"):  # a run made before the record existed
        del record[key]
    (folder / "config.json").write_text(json.dumps(record))
    old = load_trained_model(folder, "cpu")
    assert all(torch.equal(old.state_dict()[k], v) for k, v in reference.items())


def test_a_tcnn_block_without_tinycudann_is_one_clear_error(cpu_trained, tmp_path):
    run, partition, _, _ = cpu_trained
    src = block_dir(run, partition.blocks[0].id)
    for name in ("config.json", "model.pt", "done.json"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    record = json.loads((tmp_path / "config.json").read_text())
    record.update(backend="tcnn", layout="tcnn")
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(BirdnerfError) as err:
        load_trained_model(tmp_path, "cpu")
    message = str(err.value)
    assert "tcnn" in message and "torch" in message and "config.json" in message and "\n" not in message
    with pytest.raises(BirdnerfError, match="tcnn layout .* torch backend"):
        backend_for_layout("tcnn", torch.device("cpu"), "torch")


def test_reference_weights_never_pick_tcnn():
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        assert backend_for_layout("reference", torch.device(device)) in ("torch", "compiled", "fused")


def test_tcnn_reference_places_vertices_as_tcnn_does():
    config = HashGridConfig(n_levels=3, base_resolution=4, max_resolution=12, log2_hashmap_size=12)
    levels = tcnn_levels(config)
    assert [lv.hashed for lv in levels] == [False, False, False]
    # Features that are linear in the vertex coordinates interpolate exactly: the encoding of x
    # must be x * scale + 0.5 (tcnn's half-cell offset), not the reference layout's x * N_l.
    params = torch.zeros(tcnn_param_count(config) // 2, 2, dtype=torch.float64)
    for lv in levels:
        rows = torch.arange(lv.size)
        params[lv.offset + rows, 0] = (rows % lv.resolution).double()
        params[lv.offset + rows, 1] = (rows // lv.resolution**2).double()
    x = torch.rand(500, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.6
    out = encode_tcnn_reference(x, params.flatten(), config)
    for i, lv in enumerate(levels):
        torch.testing.assert_close(out[:, 2 * i], x[:, 0] * lv.scale + 0.5)
        torch.testing.assert_close(out[:, 2 * i + 1], x[:, 2] * lv.scale + 0.5)
    finer = HashGridConfig(n_levels=4, base_resolution=16, max_resolution=256, log2_hashmap_size=13)
    hashed = tcnn_levels(finer)
    assert not hashed[0].hashed and hashed[-1].hashed and hashed[-1].size == 8192


@pytest.mark.skipif(not tcnn_available(), reason="needs tinycudann and a CUDA device")
def test_tcnn_reference_matches_tinycudann():
    from birdnerf.field import TcnnHashGrid

    config = HashGridConfig(n_levels=8, base_resolution=16, max_resolution=512, log2_hashmap_size=14)
    grid = TcnnHashGrid(config)
    params = grid.tcnn.params
    assert params.numel() == tcnn_param_count(config)
    with torch.no_grad():
        params.uniform_(-1.0, 1.0, generator=torch.Generator(params.device).manual_seed(0))
    x = torch.rand(20000, 3, device=params.device, generator=torch.Generator(params.device).manual_seed(1))
    with torch.no_grad():
        got = grid(x)
        want = encode_tcnn_reference(x.double(), params.detach().double(), config).float()
    err = (got - want).abs()
    assert err.max() < 2e-2 and err.mean() < 2e-3, (err.max(), err.mean())  # tcnn rounds to half


@needs_cuda
def test_block_training_and_composited_render_on_cuda_match_cpu(cpu_trained, tmp_path):
    run, partition, scene, cpu_result = cpu_trained
    block = partition.blocks[0]
    gpu_run = tmp_path / "run"
    gpu_partition, gpu_scene = partition_dataset(partition.dataset, gpu_run, PartitionConfig(blocks=(1, 1)))
    config = dataclasses.replace(short_config("cuda"), backend="torch")
    gpu_result = train_block(gpu_run, gpu_scene, gpu_partition.blocks[0], config)
    record = json.loads((block_dir(gpu_run, block.id) / "config.json").read_text())
    assert record["device"].startswith("cuda")
    cpu_q, gpu_q = cpu_result["quality"], gpu_result["quality"]
    assert np.isfinite(gpu_q["psnr"]) and abs(gpu_q["psnr"] - cpu_q["psnr"]) < 1.5, (cpu_q, gpu_q)
    assert gpu_q["margin_db"] > 1.0
    # The CUDA-trained weights load on the CPU, and one model renders alike on both devices.
    cpu_copy = load_trained_model(block_dir(gpu_run, block.id), "cpu")
    assert all(t.device.type == "cpu" for t in cpu_copy.state_dict().values())
    i = scene.indices("test")[0]
    views = {
        dev: render_view(partition, BlockCache(run, device=dev), scene.cameras[i], scene.c2w[i])
        for dev in ("cpu", "cuda")
    }
    assert torch.isfinite(views["cuda"].rgb).all()
    assert (views["cuda"].rgb - views["cpu"].rgb).abs().mean() < 1e-3
    assert (views["cuda"].rgb - views["cpu"].rgb).abs().max() < 5e-2


def test_device_option_states_its_default_and_refuses_unknown_devices(cpu_trained):
    from typer.testing import CliRunner

    import birdnerf_cli.main

    runner = CliRunner()
    for command in ("train", "render", "eval"):
        help_text = " ".join(
            runner.invoke(birdnerf_cli.main.app, [command, "--help"]).output.replace("│", " ").split()
        )
        assert (
            "--device" in help_text
            and "cuda if available, else cpu" in help_text
            and "Default: auto" in help_text
        )
    run = str(cpu_trained[0])
    result = runner.invoke(birdnerf_cli.main.app, ["render", run, "--device", "tpu"])
    assert result.exit_code == 1 and "device 'tpu'; choose auto, cpu, cuda" in result.output
    if not torch.cuda.is_available():
        result = runner.invoke(birdnerf_cli.main.app, ["eval", run, "--device", "cuda"])
        assert result.exit_code == 1 and "no CUDA device" in result.output
