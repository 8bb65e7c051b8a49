"""Volume rendering over packed samples: closed forms, parity with the dense twins, early stop."""

from __future__ import annotations

import math

import torch

from birdnerf.render import (
    accumulate_along_rays,
    composite_background,
    distortion_loss,
    distortion_loss_dense,
    exclusive_sum_per_ray,
    march_rays,
    opacity_entropy_loss,
    render_rays,
    render_weights,
    render_weights_dense,
    sparsity_loss,
    termination_mask,
    volume_render,
)

LENGTHS = [5, 0, 1, 8, 3, 6]


def packed_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random rays of LENGTHS samples (one empty), packed, with their padded (N, L) twins."""
    gen = torch.Generator().manual_seed(seed)
    n, width = len(LENGTHS), max(LENGTHS)
    counts = torch.tensor(LENGTHS)
    valid = torch.arange(width)[None, :] < counts[:, None]
    deltas = torch.where(valid, 0.05 + 0.2 * torch.rand(n, width, generator=gen, dtype=torch.float64), 0.0)
    t_ends = 1.0 + torch.cumsum(deltas, dim=1)
    t_starts = t_ends - deltas
    sigmas = torch.where(valid, 8.0 * torch.rand(n, width, generator=gen, dtype=torch.float64), 0.0)
    return {
        "valid": valid,
        "ray_indices": torch.repeat_interleave(torch.arange(n), counts),
        "sigmas_dense": sigmas,
        "t_starts_dense": t_starts,
        "t_ends_dense": t_ends,
        "sigmas": sigmas[valid],
        "t_starts": t_starts[valid],
        "t_ends": t_ends[valid],
    }


def test_constant_density_matches_closed_form() -> None:
    sigma, step, n = 3.0, 0.01, 200
    t_starts = torch.arange(n, dtype=torch.float64) * step
    t_ends = t_starts + step
    rays = torch.zeros(n, dtype=torch.long)
    weights, transmittance = render_weights(
        torch.full((n,), sigma, dtype=torch.float64), t_starts, t_ends, rays
    )
    torch.testing.assert_close(transmittance, torch.exp(-sigma * t_starts))
    torch.testing.assert_close(weights, torch.exp(-sigma * t_starts) * (1 - math.exp(-sigma * step)))
    opacity = accumulate_along_rays(weights, None, rays, 1)
    torch.testing.assert_close(opacity, torch.tensor([1 - math.exp(-sigma * n * step)], dtype=torch.float64))


def test_packed_weights_match_dense_reference_values_and_gradients() -> None:
    b = packed_batch()
    sig_packed = b["sigmas"].clone().requires_grad_(True)
    sig_dense = b["sigmas_dense"].clone().requires_grad_(True)
    w, t = render_weights(sig_packed, b["t_starts"], b["t_ends"], b["ray_indices"])
    w_ref, t_ref = render_weights_dense(sig_dense, b["t_starts_dense"], b["t_ends_dense"])
    torch.testing.assert_close(w, w_ref[b["valid"]])
    torch.testing.assert_close(t, t_ref[b["valid"]])
    probe = torch.randn(w.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (grad,) = torch.autograd.grad((w * probe).sum() + t.sum(), sig_packed)
    dense_probe = torch.zeros_like(w_ref)
    dense_probe[b["valid"]] = probe
    (grad_ref,) = torch.autograd.grad((w_ref * dense_probe).sum() + t_ref[b["valid"]].sum(), sig_dense)
    torch.testing.assert_close(grad, grad_ref[b["valid"]])
    assert grad.abs().max() > 1e-3  # the probe reaches the densities


def test_packed_distortion_matches_dense_reference_values_and_gradients() -> None:
    b = packed_batch(seed=1)
    sig_packed = b["sigmas"].clone().requires_grad_(True)
    sig_dense = b["sigmas_dense"].clone().requires_grad_(True)
    ends_packed = b["t_ends"].clone().requires_grad_(True)
    ends_dense = b["t_ends_dense"].clone().requires_grad_(True)
    w, _ = render_weights(sig_packed, b["t_starts"], ends_packed, b["ray_indices"])
    loss = distortion_loss(w, b["t_starts"], ends_packed, b["ray_indices"], len(LENGTHS))
    w_ref, _ = render_weights_dense(sig_dense, b["t_starts_dense"], ends_dense)
    loss_ref = distortion_loss_dense(w_ref, b["t_starts_dense"], ends_dense)
    torch.testing.assert_close(loss, loss_ref)
    assert loss[1] == 0 and (loss[[0, 2, 3, 4, 5]] > 0).all()
    g_sig, g_end = torch.autograd.grad(loss.sum(), (sig_packed, ends_packed))
    g_sig_ref, g_end_ref = torch.autograd.grad(loss_ref.sum(), (sig_dense, ends_dense))
    torch.testing.assert_close(g_sig, g_sig_ref[b["valid"]])
    torch.testing.assert_close(g_end, g_end_ref[b["valid"]])


def test_distortion_of_a_single_sample_and_of_two_spikes() -> None:
    rays = torch.tensor([0, 1, 1])
    weights = torch.tensor([0.6, 0.5, 0.5])
    t_starts = torch.tensor([1.0, 0.0, 2.0])
    t_ends = torch.tensor([1.3, 0.0, 2.0])
    loss = distortion_loss(weights, t_starts, t_ends, rays, 2)
    # One interval: w^2 d / 3. Two zero-width spikes 2 m apart: 2 * 0.5 * 0.5 * 2.
    torch.testing.assert_close(loss, torch.tensor([0.36 * 0.3 / 3, 1.0]))


def test_accumulation_equals_per_ray_sums() -> None:
    b = packed_batch(seed=2)
    n = len(LENGTHS)
    weights, _ = render_weights(b["sigmas"], b["t_starts"], b["t_ends"], b["ray_indices"])
    colours = torch.rand(weights.shape[0], 3, dtype=torch.float64)
    rgb = accumulate_along_rays(weights, colours, b["ray_indices"], n)
    depth = accumulate_along_rays(weights, b["t_starts"], b["ray_indices"], n)
    for ray in range(n):
        mine = b["ray_indices"] == ray
        torch.testing.assert_close(rgb[ray], (weights[mine, None] * colours[mine]).sum(dim=0))
        torch.testing.assert_close(depth[ray], (weights[mine] * b["t_starts"][mine]).sum())
    assert torch.all(rgb[1] == 0)

    out = volume_render(b["sigmas"], colours, b["t_starts"], b["t_ends"], b["ray_indices"], n)
    white = volume_render(
        b["sigmas"],
        colours,
        b["t_starts"],
        b["t_ends"],
        b["ray_indices"],
        n,
        torch.ones(3, dtype=torch.float64),
    )
    torch.testing.assert_close(white.rgb, out.rgb + (1 - out.opacity)[:, None])
    torch.testing.assert_close(white.rgb[1], torch.ones(3, dtype=torch.float64))  # empty ray: background
    mid = 0.5 * (b["t_starts"] + b["t_ends"])
    expected_depth = accumulate_along_rays(out.weights, mid, b["ray_indices"], n) / out.opacity.clamp_min(
        1e-10
    )
    torch.testing.assert_close(out.depth, expected_depth)
    assert ((out.depth[[0, 2, 3, 4, 5]] > 1.0) & (out.depth[[0, 2, 3, 4, 5]] < 3.0)).all()
    bg = torch.rand(n, 3, dtype=torch.float64)
    torch.testing.assert_close(
        composite_background(out.rgb, out.opacity, bg), out.rgb + (1 - out.opacity)[:, None] * bg
    )


def test_exclusive_sum_keeps_precision_in_long_batches() -> None:
    n_rays, per_ray = 4000, 256
    values = torch.full((n_rays * per_ray,), 0.37)
    rays = torch.arange(n_rays).repeat_interleave(per_ray)
    out = exclusive_sum_per_ray(values, rays).reshape(n_rays, per_ray)
    expected = (0.37 * torch.arange(per_ray, dtype=torch.float64)).float()
    torch.testing.assert_close(out, expected.expand(n_rays, per_ray), rtol=1e-6, atol=1e-5)


def test_termination_mask_keeps_a_prefix_with_unchanged_weights() -> None:
    rays = torch.zeros(50, dtype=torch.long)
    t_starts = torch.arange(50, dtype=torch.float64) * 0.1
    weights, transmittance = render_weights(
        torch.full((50,), 20.0, dtype=torch.float64), t_starts, t_starts + 0.1, rays
    )
    mask = termination_mask(transmittance, 1e-4)
    assert 0 < mask.sum() < 50 and mask[: int(mask.sum())].all()
    kept, _ = render_weights(
        torch.full((int(mask.sum()),), 20.0, dtype=torch.float64),
        t_starts[mask],
        t_starts[mask] + 0.1,
        rays[mask],
    )
    torch.testing.assert_close(kept, weights[mask])
    assert 1 - weights[mask].sum() < 1e-4


def test_render_rays_with_early_stop_matches_full_render() -> None:
    n = 64
    gen = torch.Generator().manual_seed(0)
    origins = torch.cat([torch.rand(n, 2, generator=gen), torch.full((n, 1), 2.0)], dim=1)
    dirs = torch.tensor([0.0, 0.0, -1.0]).expand(n, 3)
    t_near, t_far = torch.full((n,), 1.0), torch.full((n,), 3.0)
    calls: list[int] = []

    def rgb_sigma_fn(t_starts: torch.Tensor, t_ends: torch.Tensor, rays: torch.Tensor):
        calls.append(rays.numel())
        points = origins[rays] + dirs[rays] * (0.5 * (t_starts + t_ends))[:, None]
        ground = 0.3 + 0.2 * points[:, 0]  # an opaque surface with some haze above it
        sigma = torch.where(points[:, 2] < ground, 200.0, 0.5)
        return torch.stack([points[:, 0], points[:, 1], points[:, 2]], dim=-1), sigma

    step = 0.005
    fast = render_rays(
        origins, dirs, t_near, t_far, rgb_sigma_fn, step, samples_per_round=32, background=torch.ones(3)
    )
    fast_calls = sum(calls)
    full_samples = march_rays(origins, dirs, t_near, t_far, step)
    rgbs, sigmas = rgb_sigma_fn(full_samples.t_starts, full_samples.t_ends, full_samples.ray_indices)
    ref = volume_render(
        sigmas, rgbs, full_samples.t_starts, full_samples.t_ends, full_samples.ray_indices, n, torch.ones(3)
    )
    torch.testing.assert_close(fast.rgb, ref.rgb, atol=2e-4, rtol=0)
    torch.testing.assert_close(fast.opacity, ref.opacity, atol=2e-4, rtol=0)
    torch.testing.assert_close(fast.depth, ref.depth, atol=1e-3, rtol=0)
    assert fast.weights is None
    assert fast_calls < 0.5 * full_samples.t_starts.numel()  # nothing evaluated under the ground


def test_regularisers() -> None:
    torch.testing.assert_close(opacity_entropy_loss(torch.tensor([0.5, 0.5])), torch.tensor(math.log(2)))
    assert opacity_entropy_loss(torch.tensor([0.0, 1.0])) < 1e-4
    assert sparsity_loss(torch.zeros(10)) == 0
    sig = torch.tensor([1.0, 3.0], requires_grad=True)
    loss = sparsity_loss(sig, scale=0.5)
    torch.testing.assert_close(loss, torch.log1p(torch.tensor([2.0, 18.0])).mean())
    loss.backward()
    assert (sig.grad > 0).all()


def test_empty_batch() -> None:
    empty = torch.zeros(0)
    rays = torch.zeros(0, dtype=torch.long)
    weights, transmittance = render_weights(empty, empty, empty, rays)
    assert weights.shape == transmittance.shape == (0,)
    out = volume_render(empty, torch.zeros(0, 3), empty, empty, rays, 3, torch.ones(3))
    assert torch.equal(out.rgb, torch.ones(3, 3)) and torch.equal(out.opacity, torch.zeros(3))
    assert torch.equal(distortion_loss(empty, empty, empty, rays, 3), torch.zeros(3))
