"""Hash-grid encoding: layout, hash, interpolation, and parity of the fast paths with the reference."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from birdnerf.field import HashGrid, HashGridConfig, encode_fast, encode_reference, grid_levels, hash_coords
from birdnerf.field.backends import tcnn_available
from birdnerf.field.compile import LazyCompile, compile_available
from birdnerf.field.hashgrid import grid_index, level_tensors

# 4 levels at resolutions 4, 10, 25, 64 with 2^12 rows: the two coarse levels are dense.
SMALL = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=4, max_resolution=64)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors gain nothing from two threads, and when other processes load the CPU every
    OpenMP barrier waits for a time slice (ops become ~30x slower); one thread keeps these steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_table(grid: HashGrid, seed: int = 0) -> None:
    # Unit-scale features make value and gradient comparisons meaningful (init is +-1e-4).
    with torch.no_grad():
        grid.table.copy_(torch.randn(grid.table.shape, generator=torch.Generator().manual_seed(seed)))


def test_default_resolutions_grow_geometrically():
    config = HashGridConfig()
    b = math.exp((math.log(2048) - math.log(16)) / 15)
    assert config.growth_factor == pytest.approx(b)
    res = config.resolutions()
    assert len(res) == 16 and res[0] == 16 and res[-1] == 2048
    assert res == [math.floor(16 * b**level + 1e-6) for level in range(16)]


def test_coarse_levels_are_dense_and_fine_levels_hashed():
    levels = grid_levels(SMALL)
    assert [lv.resolution for lv in levels] == [4, 10, 25, 64]
    assert [lv.dense for lv in levels] == [True, True, False, False]
    assert [lv.size for lv in levels] == [5**3, 11**3, 4096, 4096]
    assert [lv.offset for lv in levels] == [0, 125, 125 + 1331, 125 + 1331 + 4096]
    assert HashGrid(SMALL).table.shape == (125 + 1331 + 4096 * 2, 2)

    # Dense index of vertex (1, 2, 3) on the 5x5x5 vertex grid: 1 + 5 * 2 + 25 * 3.
    assert grid_index(torch.tensor([1, 2, 3]), levels[0], 12).item() == 86
    # Every vertex of every level maps inside the rows the level owns.
    for level in levels:
        coords = torch.randint(0, level.resolution + 1, (5000, 3))
        coords[0] = level.resolution  # the far corner
        rows = grid_index(coords, level, SMALL.log2_hashmap_size)
        assert rows.min() >= 0 and rows.max() < level.size
    # The dense level really is a bijection of its vertices.
    side = torch.arange(5)
    all_vertices = torch.cartesian_prod(side, side, side)
    assert grid_index(all_vertices, levels[0], 12).unique().numel() == 125


def test_hash_of_known_corner_matches_hand_computation():
    # 3 * 1 = 3;  5 * 2654435761 = 13272178805;  7 * 805459861 = 5638219027
    # 3 ^ 13272178805 ^ 5638219027 = 9781445989;  9781445989 mod 2^19 = 329061
    assert hash_coords(torch.tensor([3, 5, 7]), 19).item() == 329061
    # Same low bits as Instant-NGP's uint32 arithmetic: the products wrapped mod 2^32.
    wrapped = (3 % 2**32) ^ (5 * 2654435761 % 2**32) ^ (7 * 805459861 % 2**32)
    assert wrapped % 2**19 == 329061


def test_trilinear_interpolation_at_known_point():
    config = HashGridConfig(
        n_levels=1, n_features_per_level=2, log2_hashmap_size=8, base_resolution=2, max_resolution=2
    )
    grid = HashGrid(config)
    assert grid.levels[0].dense and grid.table.shape == (27, 2)
    _random_table(grid)
    t = grid.table.detach()

    # x = (0.3, 0.6, 0.9) on a resolution-2 grid: position (0.6, 1.2, 1.8), cell (0, 1, 1),
    # fractions (0.6, 0.2, 0.8); vertex (i, j, k) is row i + 3 j + 9 k.
    fx, fy, fz = 0.6, 0.2, 0.8
    expected = torch.zeros(2)
    for i in (0, 1):
        for j in (1, 2):
            for k in (1, 2):
                w = (fx if i else 1 - fx) * (fy if j == 2 else 1 - fy) * (fz if k == 2 else 1 - fz)
                expected += w * t[i + 3 * j + 9 * k]
    x = torch.tensor([[0.3, 0.6, 0.9]])
    torch.testing.assert_close(grid(x)[0], expected)
    torch.testing.assert_close(encode_fast(x, t, *grid.fast_args()[1:])[0], expected)

    # x = 1 on every axis lands exactly on the far vertex (2, 2, 2) = row 26.
    torch.testing.assert_close(grid(torch.ones(1, 3))[0], t[26])


def test_fast_encoding_matches_reference_values_and_gradients():
    """The vectorised formulation against the per-level loop, eagerly, in float64."""
    grid = HashGrid(SMALL).double()
    _random_table(grid)
    levels, consts = grid.levels, level_tensors(grid.levels, SMALL.log2_hashmap_size)
    x = torch.rand(700, 3, dtype=torch.float64, requires_grad=True)
    table = grid.table

    ref = encode_reference(x, table, levels, SMALL.log2_hashmap_size)
    fast = encode_fast(
        x, table, consts["scale"].double(), consts["mul"], consts["dense"], consts["offset"], 4095
    )
    torch.testing.assert_close(fast, ref)
    upstream = torch.randn_like(ref)
    grads_ref = torch.autograd.grad(ref, (x, table), upstream)
    grads_fast = torch.autograd.grad(fast, (x, table), upstream)
    torch.testing.assert_close(grads_fast[0], grads_ref[0])
    torch.testing.assert_close(grads_fast[1], grads_ref[1])
    assert grads_ref[0].abs().sum() > 0 and grads_ref[1].abs().sum() > 0


@pytest.mark.slow  # compiles with Inductor: ~30-45 s cold on 2 cores, ~1-9 s with its cache warm
@pytest.mark.skipif(not compile_available(), reason="torch.compile needs a C++ compiler")
def test_compiled_backend_matches_torch_backend():
    """Compiled vs reference in float32 (one compile, ~10-30 s cold; cached afterwards)."""
    ref, fast = HashGrid(SMALL, backend="torch"), HashGrid(SMALL, backend="compiled")
    _random_table(ref)
    fast.load_state_dict(ref.state_dict())
    from torch._dynamo.utils import counters

    from birdnerf.field.hashgrid import _compiled_encode

    for n in (1500, 3000):  # not multiples of the padding granule
        graphs_before = counters["stats"]["unique_graphs"]
        x = torch.rand(n, 3, requires_grad=True)
        out_ref, out_fast = ref(x), fast(x)
        torch.testing.assert_close(out_fast, out_ref)
        upstream = torch.randn_like(out_ref)
        gx_ref, gt_ref = torch.autograd.grad(out_ref, (x, ref.table), upstream)
        gx_fast, gt_fast = torch.autograd.grad(out_fast, (x, fast.table), upstream)
        torch.testing.assert_close(gt_fast, gt_ref)
        # d/dx scales with the resolution (up to 64 here) and sums 8 float32 terms in a different
        # order, so compare at 1e-4 instead of float32's default 1.3e-6.
        torch.testing.assert_close(gx_fast, gx_ref, rtol=1e-4, atol=1e-4)
    assert counters["stats"]["unique_graphs"] == graphs_before  # the second size reused the graph
    assert not _compiled_encode.failed


def test_lazy_compile_falls_back_to_eager_with_one_warning(monkeypatch, caplog):
    from torch._inductor.exc import InvalidCxxCompiler

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise InvalidCxxCompiler()

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(LazyCompile, "_warned", False)
    lazy = LazyCompile(lambda a, b: (a * b, a + b), name="toy")
    other = LazyCompile(lambda a, b: a - b, name="another toy")
    a = torch.arange(5.0)
    with caplog.at_level(logging.WARNING, logger="birdnerf"):
        first = lazy((a,), (2.0,))
        second = lazy((a,), (3.0,))
        third = other((a,), (1.0,))
    torch.testing.assert_close(first[0], a * 2.0)
    torch.testing.assert_close(second[1], a + 3.0)
    torch.testing.assert_close(third[0], a - 1.0)
    warnings = [r for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warnings) == 1 and lazy.failed and other.failed


def _scaled(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.relu(x * k - 1.0)


@pytest.mark.skipif(not compile_available(), reason="torch.compile cannot build CPU kernels here")
def test_lazy_compile_pads_ragged_batches_and_survives_its_recompile_limit(monkeypatch, caplog):
    """A ragged batch of 2,500 rows (padded to 3,072) gives the eager values and gradients; a graph
    past the recompile limit (each dtype is one) runs eagerly."""
    from birdnerf.field import compile as compile_module

    monkeypatch.setattr(compile_module, "RECOMPILE_LIMIT", 2)
    monkeypatch.setattr(LazyCompile, "_warned", False)
    lazy = LazyCompile(_scaled, name="toy")
    x = torch.linspace(-1.0, 2.0, 2500, requires_grad=True)
    (out,) = lazy((x,), (3,))
    out.sum().backward()
    torch.testing.assert_close(out, _scaled(x, 3))
    torch.testing.assert_close(x.grad, torch.where(x * 3 - 1.0 > 0, 3.0, 0.0))
    assert not lazy.failed
    dtypes = (torch.float64, torch.float16, torch.bfloat16)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="birdnerf"):
        results = [lazy((x.detach().to(dtype),), (3,))[0] for dtype in dtypes]
    for dtype, result in zip(dtypes, results, strict=True):
        torch.testing.assert_close(result, _scaled(x.detach().to(dtype), 3))
    assert lazy.failed
    assert [r for r in caplog.records if "torch.compile failed" in r.getMessage()]


def test_bounded_lazy_compile_sees_only_a_few_batch_sizes(monkeypatch):
    """Bounded calls reach the compiled code in chunks of at most CHUNK_ROWS rows padded to
    multiples of CHUNK_PAD (oneDNN keeps memory for every shape), with the unchunked values."""
    from birdnerf.field import compile as compile_module

    seen = []

    def recording_compile(fn, **kwargs):
        def run(*args):
            seen.append(args[0].shape[0])
            return fn(*args)

        return run

    monkeypatch.setattr(torch, "compile", recording_compile)
    lazy = LazyCompile(_scaled, name="toy")
    allowed = set(range(compile_module.CHUNK_PAD, compile_module.CHUNK_ROWS + 1, compile_module.CHUNK_PAD))
    for n in (1, 4097, 40_000, 3 * compile_module.CHUNK_ROWS):
        x = torch.linspace(-1.0, 2.0, n)
        (out,) = lazy((x,), (3,), bounded=True)
        assert out.shape == (n,)
        torch.testing.assert_close(out, _scaled(x, 3))
    assert set(seen) <= allowed and len(set(seen)) <= len(allowed)


def test_compiled_code_sees_row_major_batches_only(monkeypatch):
    """Column-major batches (the hash encoding's features) reach the compiled code row-major,
    whether or not their size needs padding: one layout, one graph."""
    strides = []

    def recording_compile(fn, **kwargs):
        def run(*args):
            strides.append(args[0].stride())
            return fn(*args)

        return run

    monkeypatch.setattr(torch, "compile", recording_compile)
    lazy = LazyCompile(lambda f: f * 2.0, name="toy")
    for n, bounded in ((1024, False), (1000, False), (4096, True), (20_000, True)):
        features = torch.rand(8, n).t()  # (n, 8), column-major
        (out,) = lazy((features,), (), bounded=bounded)
        torch.testing.assert_close(out, features * 2.0)
    assert set(strides) == {(8, 1)}, strides


def test_state_dict_is_shared_by_torch_and_compiled():
    ref, fast = HashGrid(SMALL, "torch"), HashGrid(SMALL, "compiled")
    assert list(ref.state_dict()) == list(fast.state_dict()) == ["table"]
    init = ref.table.detach()
    assert init.abs().max() <= SMALL.init_scale and init.std() > SMALL.init_scale / 4


@pytest.mark.skipif(not tcnn_available(), reason="needs tinycudann and a CUDA device")
def test_tcnn_fits_the_same_target_as_torch():
    """tcnn's layout and half precision differ, so parity is statistical: both encodings, each
    followed by the same linear read-out, fit one smooth function to similar error."""
    from birdnerf.field import TcnnHashGrid

    device = torch.device("cuda")
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(8192, 3, generator=g).to(device)
    target = (torch.sin(6 * x[:, :1]) * torch.cos(4 * x[:, 1:2]) + x[:, 2:]).to(device)
    losses = {}
    for name, grid in (("torch", HashGrid(SMALL).to(device)), ("tcnn", TcnnHashGrid(SMALL))):
        head = torch.nn.Linear(SMALL.output_dim, 1).to(device)
        opt = torch.optim.Adam([*grid.parameters(), *head.parameters()], lr=1e-2)
        for _ in range(300):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(head(grid(x)), target)
            loss.backward()
            opt.step()
        losses[name] = loss.item()
    assert losses["tcnn"] < 2.0 * losses["torch"] + 1e-4, losses
