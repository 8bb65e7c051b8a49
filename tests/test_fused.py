"""The fused C++ hash-grid kernel and lazy Adam: value-level parity with their references, the
fallback where the kernel cannot be built, and checkpoints shared with the other backends."""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil

import pytest
import torch
import torch.nn.functional as F

from birdnerf import kernels
from birdnerf.block.checkpoint import block_dir, load_tensors, read_config
from birdnerf.field import (
    BlockField,
    FieldConfig,
    HashGrid,
    HashGridConfig,
    encode_reference,
    resolve_backend,
)
from birdnerf.field import fused as fused_module
from birdnerf.field.backends import _resolve
from birdnerf.field.compile import compile_available
from birdnerf.field.hashgrid import CORNERS, grid_index
from birdnerf.partition import PartitionConfig, load_scene, partition_dataset
from birdnerf.train import RenderConfig, train_block
from birdnerf.train.optim import LazyAdam, lazy_adam_reference, lazy_adam_rows
from tests.conftest import mini_train_config

# 5 levels at resolutions 4 .. 64 with 2^10 rows: two dense levels, three hashed (with collisions).
SMALL = HashGridConfig(n_levels=5, log2_hashmap_size=10, base_resolution=4, max_resolution=64)
FIELD = FieldConfig(grid=SMALL, hidden_dim=32, appearance_dim=8, num_images=6)

needs_compiler = pytest.mark.skipif(
    shutil.which("c++") is None, reason="the fused kernel needs a C++ compiler"
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def kernel():
    """The built kernel; with a compiler present, a failed build is a failure, not a skip."""
    if shutil.which("c++") is None:
        pytest.skip("the fused kernel needs a C++ compiler")
    assert fused_module.fused_available(), "the fused kernel did not build (see the logged warning)"
    return fused_module.fused_kernel()


def _points(n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g, dtype=torch.float64).to(dtype)
    # Corners, faces and points outside the cube (clamped: zero position gradient on that axis).
    x[:6] = torch.tensor(
        [[0, 0, 0], [1, 1, 1], [1.2, -0.1, 0.5], [0.5, 1, 0], [1, 0.3, 1], [0.25, 0.5, 0.75]], dtype=dtype
    )
    return x


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_encoding_matches_reference_values_and_gradients(kernel, dtype):
    grid = HashGrid(SMALL, backend="fused").to(dtype)
    with torch.no_grad():
        grid.table.copy_(torch.randn(grid.table.shape, generator=torch.Generator().manual_seed(1)))
    x = _points(4000, dtype).requires_grad_(True)
    out = grid(x)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    grad_x, grad_table = torch.autograd.grad(out, (x, grid.table), upstream)

    x_ref = x.detach().clone().requires_grad_(True)
    ref = encode_reference(x_ref, grid.table, grid.levels, SMALL.log2_hashmap_size)
    ref_x, ref_table = torch.autograd.grad(ref, (x_ref, grid.table), upstream)

    # Same corner order and arithmetic as the reference: the features agree bit for bit.
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert out.is_contiguous()  # row-major: the MLP heads read it without a copy
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 2e-4}
    torch.testing.assert_close(grad_table, ref_table, **tol)
    torch.testing.assert_close(grad_x, ref_x, **tol)
    assert (grad_x[2, :2] == 0).all() and grad_x[2, 2] != 0  # x and y of point 2 are clamped
    assert grad_x.abs().sum() > 0 and grad_table.abs().sum() > 0


def test_table_gradient_touches_only_the_rows_of_the_batch(kernel):
    grid = HashGrid(SMALL, backend="fused")
    x = torch.rand(50, 3, generator=torch.Generator().manual_seed(3))
    grid(x).square().sum().backward()
    touched = torch.zeros(grid.table.shape[0], dtype=torch.bool)
    for level in grid.levels:
        cell = (x * level.resolution).floor().clamp(max=level.resolution - 1).long()
        for corner in CORNERS:
            touched[
                level.offset + grid_index(cell + torch.tensor(corner), level, SMALL.log2_hashmap_size)
            ] = True
    nonzero = grid.table.grad.ne(0).any(dim=1)
    assert not nonzero[~touched].any()
    assert nonzero.sum() > 0.9 * touched.sum()  # (a row can only be zero if its weights cancel)
    assert touched.sum() < 0.5 * len(touched)  # the batch is sparse: the test means something


def _adam_case(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    param = torch.randn(3000, 2, generator=g, dtype=dtype)
    exp_avg = 0.1 * torch.randn(3000, 2, generator=g, dtype=dtype)
    exp_avg_sq = 0.01 * torch.rand(3000, 2, generator=g, dtype=dtype)
    grad = torch.zeros(3000, 2, dtype=dtype)
    hit = torch.randperm(3000, generator=g)[:700]
    grad[hit] = torch.randn(700, 2, generator=g, dtype=dtype)
    grad[hit[:5], 1] = 0.0  # a row hit in one feature only is still updated in both
    return param, grad, exp_avg, exp_avg_sq, hit


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lazy_adam_equals_dense_adam_on_the_rows_hit(kernel, dtype):
    """From the same state (step 4, non-zero moments), one LazyAdam step equals one
    torch.optim.Adam step on the rows with a gradient and leaves the other rows untouched."""
    param, grad, exp_avg, exp_avg_sq, hit = _adam_case(dtype)
    states = []
    for cls, extra in ((torch.optim.Adam, {}), (LazyAdam, {"lazy": True})):
        p = torch.nn.Parameter(param.clone())
        opt = cls([{"params": [p], **extra}], lr=0.05, betas=(0.9, 0.99), eps=1e-15)
        opt.state[p] = {
            "step": torch.tensor(4.0),
            "exp_avg": exp_avg.clone(),
            "exp_avg_sq": exp_avg_sq.clone(),
        }
        p.grad = grad.clone()
        opt.step()
        states.append((p.detach(), opt.state[p]))
    (dense_p, dense_s), (lazy_p, lazy_s) = states
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-6, "atol": 1e-7}
    torch.testing.assert_close(lazy_p[hit], dense_p[hit], **tol)
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(lazy_s[key][hit], dense_s[key][hit], **tol)
    missed = torch.ones(len(param), dtype=torch.bool)
    missed[hit] = False
    assert torch.equal(lazy_p[missed], param[missed])
    assert torch.equal(lazy_s["exp_avg"][missed], exp_avg[missed])
    assert not torch.equal(dense_p[missed], param[missed])  # dense Adam moves them: a real difference
    assert float(lazy_s["step"]) == 5.0


def test_lazy_adam_kernel_matches_its_torch_twin(kernel):
    param, grad, exp_avg, exp_avg_sq, hit = _adam_case(torch.float32, seed=1)
    args = (0.05 / (1 - 0.9**3), 0.9, 0.99, 1e-15, (1 - 0.99**3) ** 0.5)
    fast = [t.clone() for t in (param, grad, exp_avg, exp_avg_sq)]
    slow = [t.clone() for t in (param, grad, exp_avg, exp_avg_sq)]
    assert kernel.lazy_adam_step(*fast, *args) == lazy_adam_reference(*slow, *args) == len(hit)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_lazy_adam_state_round_trips_with_plain_adam(kernel):
    """LazyAdam's state has Adam's keys: a state saved by either loads into the other, and a
    LazyAdam resumed from its own state_dict continues exactly."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(100, 2))
    w = torch.nn.Parameter(torch.randn(4, 4))

    def run(opt, steps, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            rows = torch.randint(0, 100, (10,), generator=g)
            (p[rows].square().sum() + w.sum()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    def make():
        groups = [{"params": [p], "lazy": True}, {"params": [w], "weight_decay": 1e-6}]
        return LazyAdam(groups, lr=0.01, betas=(0.9, 0.99), eps=1e-15)

    opt = make()
    run(opt, 3, seed=0)
    saved = copy.deepcopy(opt.state_dict())  # as written to a checkpoint
    values = (p.detach().clone(), w.detach().clone())
    run(opt, 2, seed=1)
    expected = (p.detach().clone(), w.detach().clone())
    with torch.no_grad():
        p.copy_(values[0])
        w.copy_(values[1])
    resumed = make()
    resumed.load_state_dict(saved)
    assert [g["lazy"] for g in resumed.param_groups] == [True, False]
    run(resumed, 2, seed=1)
    torch.testing.assert_close(p.detach(), expected[0], rtol=0, atol=0)
    torch.testing.assert_close(w.detach(), expected[1], rtol=0, atol=0)
    plain = torch.optim.Adam([{"params": [p]}, {"params": [w]}], lr=0.01)
    plain.load_state_dict(saved)  # Adam keeps its state keys; the extra group flag is harmless
    lazy = make()
    lazy.load_state_dict(plain.state_dict())
    assert [g["lazy"] for g in lazy.param_groups] == [True, False]


def test_lazy_adam_rows_fall_back_to_the_twin(monkeypatch):
    monkeypatch.setattr("birdnerf.train.optim.fused_kernel", lambda: None)
    param, grad, exp_avg, exp_avg_sq, hit = _adam_case(torch.float32, seed=2)
    assert lazy_adam_rows(param, grad, exp_avg, exp_avg_sq, 0.1, 0.9, 0.99, 1e-15, 0.5) == len(hit)


# Tolerances of the fused field against the float32 reference: float32 rounding, or bfloat16's
# 8-bit mantissa in the MLPs (outputs within ~1e-3, gradients within a few % of their norm).
TOLERANCE = {
    "fp32": {"out": {"rtol": 1e-5, "atol": 1e-6}, "sigma": {"rtol": 1e-5, "atol": 1e-6}, "grad": 1e-4},
    "bf16": {"out": {"rtol": 0.0, "atol": 5e-3}, "sigma": {"rtol": 5e-2, "atol": 1e-3}, "grad": 5e-2},
}


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    value, reference = value.detach(), reference.detach()
    return float((value - reference).norm() / reference.norm().clamp_min(1e-12))


@pytest.mark.slow  # compiles the MLP heads with Inductor: ~20-40 s cold on 2 cores
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_field_matches_torch_field_and_shares_its_state(kernel, precision):
    torch.manual_seed(0)
    reference = BlockField(FIELD, backend="torch")
    with torch.no_grad():
        reference.encoding.table.normal_(0.0, 0.5)
    fused = BlockField(FIELD, backend="fused", precision=precision)
    assert (fused.backend, fused.precision) == ("fused", precision)
    fused.load_state_dict(reference.state_dict())
    tol = TOLERANCE[precision]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1500, 3, generator=g)
    x[:5] = x[:5] * 3.0 - 1.0
    dirs = F.normalize(torch.randn(1500, 3, generator=g), dim=-1)
    ids = torch.randint(0, 6, (1500,), generator=g)
    outs = [field(x, dirs, ids) for field in (reference, fused)]
    assert all(t.dtype == torch.float32 for t in outs[1])
    torch.testing.assert_close(outs[1][0], outs[0][0], **tol["out"])
    torch.testing.assert_close(outs[1][1], outs[0][1], **tol["sigma"])
    if precision == "bf16":  # the products really ran in bfloat16: more than float32 rounding apart
        assert _relative_error(outs[1][0], outs[0][0]) > 1e-5
    for rgb, sigma in outs:
        (F.mse_loss(rgb, torch.full_like(rgb, 0.3)) + 1e-2 * sigma.mean()).backward()
    for (name, p_ref), p_fused in zip(reference.named_parameters(), fused.parameters(), strict=True):
        assert p_fused.grad.dtype == torch.float32
        assert _relative_error(p_fused.grad, p_ref.grad) < tol["grad"], name
    with torch.no_grad():
        torch.testing.assert_close(fused.density(x), reference.density(x), **tol["sigma"])


def test_precision_is_resolved_per_backend(kernel, monkeypatch):
    from birdnerf.field import backends

    for native in (True, False):
        monkeypatch.setattr(backends, "bf16_native", lambda native=native: native)
        assert backends.resolve_precision("auto", "fused") == ("bf16" if native else "fp32")
        assert backends.resolve_precision("auto", "torch") == "fp32"
    assert BlockField(FIELD, backend="torch").precision == "fp32"
    with pytest.raises(ValueError, match="fused backend only"):
        BlockField(FIELD, backend="torch", precision="bf16")
    with pytest.raises(ValueError, match="unknown MLP precision"):
        backends.resolve_precision("fp16", "fused")


def test_auto_picks_fused_on_cpu(kernel, caplog):
    _resolve.cache_clear()
    with caplog.at_level(logging.INFO, logger="birdnerf"):
        assert resolve_backend("auto", "cpu") == "fused"
    assert any("fused" in r.getMessage() for r in caplog.records)


def test_fallback_when_the_kernel_cannot_build(monkeypatch, caplog):
    def fail(name, source, native: bool = True):
        raise RuntimeError("Error building extension\nhashgrid.cpp:1: error: no compiler here")

    monkeypatch.setattr(kernels, "build", fail)
    fused_module.fused_kernel.cache_clear()
    _resolve.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="birdnerf"):
            expected = "compiled" if compile_available() else "torch"
            assert resolve_backend("auto", "cpu") == expected
            assert resolve_backend("fused", "cpu") == expected
            assert BlockField(FIELD, backend="fused").backend == expected
            assert not fused_module.fused_available()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "error: no compiler here" in warnings[0], warnings
    finally:
        fused_module.fused_kernel.cache_clear()
        _resolve.cache_clear()


def test_a_compiler_without_native_flags_builds_the_portable_kernel(monkeypatch, caplog):
    built = []

    def build(name, source, native: bool = True):
        built.append(native)
        if native:
            raise RuntimeError("c++: error: unrecognized command-line option '-march=native'")
        return "portable kernel"

    monkeypatch.setattr(kernels, "build", build)
    fused_module.fused_kernel.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="birdnerf"):
            assert fused_module.fused_kernel() == "portable kernel"
        assert built == [True, False]
        assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    finally:
        fused_module.fused_kernel.cache_clear()


def test_the_native_build_is_keyed_on_the_cpu(monkeypatch, tmp_path):
    names = []

    def load(name: str, **kwargs):
        names.append((name, tuple(kwargs["extra_cflags"])))
        return name

    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", load)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    for cpu in ("cpu A", "cpu B"):
        monkeypatch.setattr(kernels, "_cpu_signature", lambda cpu=cpu: cpu)
        kernels.build("hashgrid", fused_module.SOURCE, native=True)
        kernels.build("hashgrid", fused_module.SOURCE, native=False)
    (a_native, a_flags), (a_portable, _), (b_native, _), (b_portable, _) = names
    assert "-march=native" in a_flags
    assert a_native != b_native and a_portable == b_portable and a_native != a_portable


@pytest.mark.slow  # two short block trainings on the mini survey (~10-20 s)
def test_a_checkpoint_of_one_backend_resumes_on_the_other(kernel, mini_dataset, tmp_path):
    """Train 6 steps with the torch backend, resume to 12 with the fused one (model and optimiser
    state load unchanged); the finished model loads into either backend with the same output."""
    config = dataclasses.replace(
        mini_train_config(),
        steps=12,
        checkpoint_every=6,
        log_every=6,
        rays_per_batch=256,
        samples_per_batch=4096,
        render=RenderConfig(occupancy_resolution=16),
    )
    partition, _ = partition_dataset(mini_dataset, tmp_path / "run", PartitionConfig(blocks=(1, 1)))
    scene, block = load_scene(partition), partition.blocks[0]
    torch_config = dataclasses.replace(config, backend="torch")
    assert train_block(tmp_path / "out", scene, block, torch_config, stop_after=6)["step"] == 6
    fused_config = dataclasses.replace(config, backend="fused", precision="fp32")
    result = train_block(tmp_path / "out", scene, block, fused_config)
    assert result["finished"] and result["step"] == 12
    record = read_config(block_dir(tmp_path / "out", block.id))
    assert (record["backend"], record["precision"]) == ("fused", "fp32")
    assert [r["changed"] for r in record["resumed"]] == [
        {"backend": ["torch", "fused"], "precision": ["auto", "fp32"]}
    ]
    weights = load_tensors(block_dir(tmp_path / "out", block.id) / "model.pt")["model"]
    fields = []
    for backend in ("torch", "fused"):
        field_config = dataclasses.replace(config.field, num_images=len(block.images))
        field = BlockField(field_config, backend=backend, precision="fp32")
        field.load_state_dict({k[len("field.") :]: v for k, v in weights.items() if k.startswith("field.")})
        fields.append(field)
    x = torch.rand(500, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fields[1].density(x), fields[0].density(x), rtol=1e-5, atol=1e-6)


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path):
    import os
    import time

    from birdnerf.kernels import STALE_LOCK_S, _remove_stale_lock

    lock = tmp_path / "lock"
    lock.touch()
    _remove_stale_lock(lock)
    assert lock.exists()  # a build may be running
    old = time.time() - STALE_LOCK_S - 5
    os.utime(lock, (old, old))
    _remove_stale_lock(lock)
    assert not lock.exists()
    _remove_stale_lock(lock)  # nothing there: nothing to do
