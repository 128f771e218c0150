import math

import pytest
import torch

from astra_core.config import FlowConfig
from astra_core.model.flow import RectifiedFlow
from astra_core.model.sampling import SAMPLERS, euler, heun


def test_noising_and_target_define_the_straight_path():
    flow = RectifiedFlow()
    x0, eps = torch.randn(3, 4), torch.randn(3, 4)
    sigma = torch.tensor([0.0, 0.3, 1.0])
    xs = flow.add_noise(x0, eps, sigma)
    assert torch.allclose(xs[0], x0[0]) and torch.allclose(xs[2], eps[2])
    # moving along the target velocity from x0 for σ reaches x_σ
    assert torch.allclose(x0 + sigma[:, None] * flow.velocity_target(x0, eps), xs, atol=1e-6)


def test_shift_matches_wan_formula_and_keeps_endpoints():
    flow = RectifiedFlow(FlowConfig(shift=5.0))
    s = torch.tensor([0.0, 0.2, 0.5, 1.0])
    assert torch.allclose(flow.shift(s), 5 * s / (1 + 4 * s))
    sig = flow.inference_sigmas(8)
    assert sig[0] == 1.0 and sig[-1] == 0.0 and bool((sig.diff() < 0).all())
    train = flow.sample_sigma(20000, torch.Generator().manual_seed(0))
    assert 0 < train.min() and train.max() < 1
    assert train.median() > 0.75  # shift 5 puts most training time at high noise: median 5/6


def test_gaussian_loss_weighting_peaks_at_its_centre():
    flow = RectifiedFlow(FlowConfig(loss_weighting="gaussian", weighting_center=0.5))
    w = flow.loss_weight(torch.tensor([0.1, 0.5, 0.9]))
    assert w[1] > w[0] and w[1] > w[2]
    assert torch.equal(RectifiedFlow().loss_weight(torch.rand(4)), torch.ones(4))


def _gaussian_velocity(mu: float, s: float):
    """Exact flow velocity when the data is N(mu, s²): x_σ ~ N((1−σ)mu, (1−σ)²s² + σ²)."""

    def velocity(x, sigma):
        std = torch.sqrt((1 - sigma) ** 2 * s**2 + sigma**2)
        z = (x - (1 - sigma) * mu) / std
        dstd = (-(1 - sigma) * s**2 + sigma) / std
        return -mu + dstd * z

    return velocity


def test_samplers_share_a_signature_and_solve_a_known_flow():
    mu, s = 2.0, 0.5
    x1 = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    exact = mu + s * x1  # the probability-flow map of a Gaussian keeps the standardised variable
    errors = {}
    for name, sampler in SAMPLERS.items():
        sigmas = torch.linspace(1, 0, 21)
        out = sampler(_gaussian_velocity(mu, s), x1.clone(), sigmas)
        errors[name] = float((out - exact).abs().max())
    assert errors["heun"] < 0.01
    assert errors["euler"] < 0.3
    assert errors["heun"] < errors["euler"] / 3
    # both converge as the step count grows
    fine = euler(_gaussian_velocity(mu, s), x1.clone(), torch.linspace(1, 0, 401))
    assert float((fine - exact).abs().max()) < errors["euler"] / 10


def test_heun_is_exact_for_a_point_mass():
    # data = a single point: v = (x − x0)/σ, straight lines, so even 1 step is exact for both samplers
    x0 = torch.tensor([1.5, -0.5])
    velocity = lambda x, sigma: (x - x0) / sigma  # noqa: E731
    for sampler in (euler, heun):
        out = sampler(velocity, torch.tensor([0.3, 0.2]), torch.tensor([1.0, 0.5, 0.0]))
        assert torch.allclose(out, x0, atol=1e-6), sampler.__name__


@pytest.mark.parametrize("steps", [1, 4])
def test_sampler_calls_follow_the_step_count(steps):
    calls = {"euler": 0, "heun": 0}

    def make(name):
        def v(x, sigma):
            calls[name] += 1
            return torch.zeros_like(x)

        return v

    for name, sampler in SAMPLERS.items():
        sampler(make(name), torch.zeros(2), RectifiedFlow().inference_sigmas(steps))
    assert calls["euler"] == steps
    assert calls["heun"] == 2 * steps - 1
    assert math.isfinite(steps)


def test_residual_target_round_trips_and_scales():
    flow = RectifiedFlow(FlowConfig(target="residual", residual_scale=4.0))
    g = torch.Generator().manual_seed(0)
    last, chunk = torch.randn(2, 3, 1, 4, 4, generator=g), torch.randn(2, 3, 2, 4, 4, generator=g)
    target = flow.to_target(chunk, last)
    assert torch.allclose(target, 4.0 * (chunk - last))
    assert torch.allclose(flow.from_target(target, last), chunk, atol=1e-6)
    plain = RectifiedFlow(FlowConfig())
    assert plain.to_target(chunk, last) is chunk and plain.from_target(chunk, last) is chunk


@pytest.mark.parametrize("field,value", [("residual_scale", 0.0), ("shift", -1.0), ("target", "delta")])
def test_flow_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        FlowConfig(**{field: value})


def test_data_prediction_turns_the_clean_sample_into_the_velocity():
    flow = RectifiedFlow(FlowConfig(prediction="data", sigma_floor=0.05))
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 2, 5, 5, generator=gen), torch.randn(4, 3, 2, 5, 5, generator=gen)
    sigma = torch.tensor([0.01, 0.05, 0.4, 0.95])
    xs = flow.add_noise(x0, eps, sigma)
    # the true clean sample stands for the true velocity (scaled by σ/floor below the floor)
    v = flow.velocity(x0, xs, sigma)
    target = flow.velocity_target(x0, eps, sigma)
    assert torch.allclose(v, target, atol=1e-5)
    assert torch.allclose(target[1:], (eps - x0)[1:], atol=1e-6)
    assert torch.allclose(target[0], (eps - x0)[0] * 0.2, atol=1e-6)
    # an error δ in x̂₀ is an error δ / max(σ, floor) in velocity
    delta = torch.full_like(x0, 0.1)
    err = (flow.velocity(x0 + delta, xs, sigma) - target).abs().flatten(1).mean(1)
    assert torch.allclose(err, 0.1 / sigma.clamp(min=0.05), rtol=1e-4)
    # one Euler step from any σ ≥ floor to 0 lands on the predicted sample; velocity prediction is unchanged
    assert torch.allclose(xs[2] - 0.4 * v[2], x0[2], atol=1e-5)
    # sampling uses the exact σ: one Euler step from below the floor still lands on x̂₀
    assert torch.allclose(xs[0] - 0.01 * flow.velocity(x0, xs, sigma, floor=False)[0], x0[0], atol=1e-4)
    with pytest.raises(ValueError, match="sigma"):
        flow.velocity_target(x0, eps)
    plain = RectifiedFlow()
    assert torch.equal(plain.velocity(v, xs, sigma), v) and torch.equal(plain.velocity_target(x0, eps, sigma), eps - x0)


@pytest.mark.parametrize("floor", [0.0, 1.0, -0.1])
def test_flow_config_rejects_a_sigma_floor_outside_0_1(floor):
    with pytest.raises(ValueError, match="sigma_floor"):
        FlowConfig(sigma_floor=floor)


def test_edm_prediction_passes_the_input_through_at_small_noise():
    flow = RectifiedFlow(FlowConfig(prediction="edm", sigma_data=0.5))
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 2, 5, 5, generator=gen), torch.randn(4, 3, 2, 5, 5, generator=gen)
    sigma = torch.tensor([1e-4, 0.2, 0.6, 1.0])
    xs = flow.add_noise(x0, eps, sigma)
    zero = torch.zeros_like(x0)
    # F = 0: near σ = 0 the estimate is the input itself, at σ = 1 it is 0 (no skip left)
    passed = flow.preconditioned(zero, xs, sigma)
    assert torch.allclose(passed[0], xs[0], atol=1e-3)
    assert torch.equal(passed[3], zero[3])
    # the skip and output scales of the formula, checked at σ = 0.6 with s = 0.5
    s, sg = 0.5, 0.6
    d = math.sqrt(sg**2 + s**2 * (1 - sg) ** 2)
    ones = torch.ones_like(x0)
    assert torch.allclose(flow.preconditioned(ones, zero, sigma)[2], ones[2] * sg * s / d, atol=1e-6)
    assert torch.allclose(flow.preconditioned(zero, ones, sigma)[2], ones[2] * s**2 * (1 - sg) / d**2, atol=1e-6)
    # the network output that stands for the true x₀ gives the true velocity, and the loss target agrees
    c_skip = s**2 * (1 - sigma) / (sigma**2 + s**2 * (1 - sigma) ** 2)
    c_out = sigma * s / (sigma**2 + s**2 * (1 - sigma) ** 2).sqrt()
    ideal = (x0 - c_skip.view(-1, 1, 1, 1, 1) * xs) / c_out.view(-1, 1, 1, 1, 1)
    v = flow.velocity(ideal, xs, sigma, floor=False)
    assert torch.allclose(v[1:], (eps - x0)[1:], atol=1e-4)
    assert torch.allclose(flow.velocity(ideal, xs, sigma)[1:], flow.velocity_target(x0, eps, sigma)[1:], atol=1e-4)
    with pytest.raises(ValueError, match="sigma_data"):
        FlowConfig(sigma_data=0.0)


def test_the_network_learns_to_move_the_context_as_its_action_says():
    """A small world model learns a task only the action explains: the target chunk is the context frame
    shifted one token left or right, as the action's sign says. Flipping the actions must then cost a lot.
    (A network that predicts the clean sample without a skip, `prediction: data`, does not learn even to
    copy the context at this length: the reason for `edm`.)"""
    from astra_core.config import ActionConfig, AstraConfig, HistoryConfig, dit_preset
    from astra_core.model.actions import AstraNet
    from astra_core.model.objective import WorldModelObjective

    cfg = AstraConfig(
        dit=dit_preset("tiny", dim=64, ffn_dim=128, num_heads=4, num_layers=2, in_dim=8, out_dim=8),
        action=ActionConfig(action_dim=1, hidden_dim=32),
        history=HistoryConfig(chunk_size=2, window=4, noise_prob=0.0),
        flow=FlowConfig(prediction="edm"),
    )
    torch.manual_seed(0)
    net = AstraNet(cfg)
    objective = WorldModelObjective(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)

    def batch(n, g):
        context = torch.randn(n, 8, 1, 8, 8, generator=g)
        sign = torch.randint(0, 2, (n,), generator=g) * 2 - 1
        target = torch.stack([torch.roll(c, shifts=2 * int(a), dims=-1) for c, a in zip(context, sign)])
        actions = torch.zeros(n, 3, 1)
        actions[:, 1:, 0] = sign[:, None].float()
        mask = torch.ones(n, 3)
        mask[:, 0] = 0
        return torch.cat([context, target.expand(-1, -1, 2, -1, -1)], dim=2), actions, mask

    for _ in range(400):
        loss, _ = objective.loss(*batch(16, gen), 1, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    latents, actions, mask = batch(64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        own, flipped = (
            float(
                objective.loss(latents, a, mask, 1, generator=torch.Generator().manual_seed(2), drop_actions=False)[0]
            )
            for a in (actions, -actions)
        )
    assert flipped > 3 * own


def test_warp_moves_pixel_detail_by_the_flow():
    """A flow of half a latent cell moves the pixel tokenizer's picture by exactly 2 of its 4 pixels per
    cell; a zero flow hands the latents back; the border repeats where the sample falls outside."""
    from astra_core.data.tokenizer import PixelTokenizer
    from astra_core.model.flow import warp

    tokenizer = PixelTokenizer(4)
    image = torch.rand(2, 3, 2, 32, 32) * 2 - 1
    latents = tokenizer.encode(image)
    flow = torch.zeros(2, 2, 2, 8, 8)
    assert torch.equal(warp(latents, flow, 4), latents)
    flow[:, 0] = 0.5  # sample 2 pixels to the right
    moved = tokenizer.decode(warp(latents, flow, 4))
    assert torch.allclose(moved[..., :, :-2], image[..., :, 2:], atol=1e-6)
    assert torch.allclose(moved[..., :, -1], image[..., :, -1], atol=1e-6)  # border
    flow = torch.zeros(2, 2, 2, 8, 8)
    flow[:, 1] = -0.25  # one pixel down
    moved = tokenizer.decode(warp(latents, flow, 4))
    assert torch.allclose(moved[..., 1:, :], image[..., :-1, :], atol=1e-6)
    # without unshuffling, the latents themselves move by whole cells
    assert torch.allclose(warp(latents, torch.ones(2, 2, 2, 8, 8), 1)[..., :-1, :-1], latents[..., 1:, 1:], atol=1e-6)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "catmull_rom"])
def test_every_warp_mode_moves_whole_pixels_exactly_and_keeps_a_ramp(mode):
    """Whole-pixel shifts hand the picture back moved (the border repeating); at a fractional shift a
    linear ramp inside the picture comes back exactly from bilinear and Catmull–Rom sampling, and nearly
    from grid_sample's bicubic kernel (a = −0.75 reproduces constants only)."""
    from astra_core.data.tokenizer import PixelTokenizer
    from astra_core.model.flow import warp

    tokenizer = PixelTokenizer(4)
    image = torch.rand(1, 3, 2, 32, 32) * 2 - 1
    flow = torch.zeros(1, 2, 2, 8, 8)
    flow[:, 0] = 0.5
    moved = tokenizer.decode(warp(tokenizer.encode(image), flow, 4, mode))
    assert torch.allclose(moved[..., :, :-2], image[..., :, 2:], atol=1e-5)
    assert torch.allclose(moved[..., :, -2:], image[..., :, -1:].expand(-1, -1, -1, -1, 2), atol=1e-5)
    ramp = torch.linspace(-1, 1, 32).expand(1, 3, 2, 32, 32).contiguous()
    flow[:, 0] = 0.3 / 4  # 0.3 of a pixel
    moved = tokenizer.decode(warp(tokenizer.encode(ramp), flow, 4, mode))
    error = (moved[..., 2:-2] - (ramp[..., 2:-2] + 0.3 * 2 / 31)).abs().max()
    assert error < (5e-3 if mode == "bicubic" else 1e-5)


def test_catmull_rom_warps_repeatedly_without_ringing():
    """A rollout warps each frame from the last: 48 half-pixel warps back and forth of a wave at 0.3 of
    Nyquist. grid_sample's bicubic kernel (a = −0.75) amplifies it several times over; Catmull–Rom's
    (a = −0.5, gain 0.983 there) damps it, as every warp must that keeps the gain at or below 1."""
    from astra_core.model.flow import _cubic_weights, catmull_rom_sample

    xs = torch.arange(64.0)
    wave = torch.sin(0.3 * math.pi * xs).expand(1, 1, 64, 64).contiguous()
    grid_y, grid_x = torch.meshgrid(torch.arange(64.0), xs, indexing="ij")

    def energy_after(sample):
        x = wave
        for k in range(48):
            x = sample(x, (grid_x + (0.5 if k % 2 == 0 else -0.5))[None], grid_y[None])
        return float(x[..., 16:-16, 16:-16].pow(2).mean() / wave[..., 16:-16, 16:-16].pow(2).mean())

    def bicubic(images, x, y):
        grid = torch.stack([(2 * x + 1) / 64 - 1, (2 * y + 1) / 64 - 1], dim=-1)
        return torch.nn.functional.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)

    assert energy_after(bicubic) > 5
    assert 0.983**96 - 0.02 < energy_after(catmull_rom_sample) < 0.983**96 + 0.02
    assert [round(float(w), 4) for w in _cubic_weights(torch.tensor(0.5), -0.5)] == [-0.0625, 0.5625, 0.5625, -0.0625]


def test_warp_residual_weighs_only_the_residual_on_top_of_the_moved_last_frame():
    """x̂₀ = warp(last frame, flow) + w · residual: w 1 is training's estimate, w 0 the moved frame alone,
    w ½ halfway; the velocity a sampler integrates follows the same estimate."""
    from astra_core.model.flow import warp

    flow_model = RectifiedFlow(FlowConfig(prediction="warp", warp_unshuffle=4, warp_mode="bicubic"))
    g = torch.Generator().manual_seed(3)
    last = torch.rand(2, 48, 1, 4, 4, generator=g) * 2 - 1
    output = torch.cat([torch.randn(2, 48, 2, 4, 4, generator=g) * 0.1, torch.randn(2, 2, 2, 4, 4, generator=g)], 1)
    moved = warp(last.expand(-1, -1, 2, -1, -1), output[:, 48:], 4, "bicubic")
    full = flow_model.from_last_frame(output, last)
    assert torch.allclose(full, moved + output[:, :48], atol=1e-6)
    assert torch.allclose(flow_model.from_last_frame(output, last, 0.0), moved, atol=1e-6)
    assert torch.allclose(flow_model.from_last_frame(output, last, 0.5), (full + moved) / 2, atol=1e-6)
    x, sigma = torch.randn(2, 48, 2, 4, 4, generator=g), torch.tensor(0.6)
    v = flow_model.velocity(output, x, sigma, floor=False, last_frame=last, residual_weight=0.5)
    assert torch.allclose(v, (x - (full + moved) / 2) / 0.6, atol=1e-5)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "catmull_rom"])
def test_zero_padding_leaves_what_enters_the_view_to_the_residual_at_full_weight(mode):
    """`warp_padding: zeros`: a shift of two pixels reads zeros in the two columns that enter the view
    (the border padding repeats the edge there); the picture inside moves as before. When sampling at
    residual weight ½, the residual counts fully in the entering columns and ½ elsewhere."""
    from astra_core.data.tokenizer import PixelTokenizer
    from astra_core.model.flow import warp

    tokenizer = PixelTokenizer(4)
    g = torch.Generator().manual_seed(5)
    image = torch.rand(1, 3, 2, 32, 32, generator=g) * 2 - 1
    latents = tokenizer.encode(image)
    flow = torch.zeros(1, 2, 2, 8, 8)
    flow[:, 0] = 0.5  # sample 2 pixels to the right
    zeros = tokenizer.decode(warp(latents, flow, 4, mode, "zeros"))
    border = tokenizer.decode(warp(latents, flow, 4, mode, "border"))
    assert torch.allclose(zeros[..., :-2], border[..., :-2], atol=1e-5)
    assert torch.allclose(zeros[..., :-2], image[..., 2:], atol=1e-5)
    assert zeros[..., -2:].abs().max() < 1e-6

    flow_model = RectifiedFlow(FlowConfig(prediction="warp", warp_unshuffle=4, warp_mode=mode, warp_padding="zeros"))
    residual = tokenizer.encode(torch.rand(1, 3, 2, 32, 32, generator=g) * 2 - 1)
    output = torch.cat([residual, flow], dim=1)
    half = tokenizer.decode(flow_model.from_last_frame(output, latents[:, :, :1], 0.5))
    res = tokenizer.decode(residual)
    assert torch.allclose(half[..., -2:], res[..., -2:], atol=1e-5)  # all of the residual where the view is new
    assert torch.allclose(half[..., :-2], image[:, :, :1, :, 2:] + 0.5 * res[..., :-2], atol=1e-5)
    full = tokenizer.decode(flow_model.from_last_frame(output, latents[:, :, :1]))
    assert torch.allclose(full, zeros[:, :, :1] + res, atol=1e-5)  # training's estimate: warp + residual


def test_a_per_pixel_flow_moves_one_pixel_and_leaves_its_neighbours():
    """`warp_flow: pixel`: a flow of 2·p² channels gives each fine pixel its own vector. A uniform one
    equals the per-cell flow; a flow on one pixel only moves that pixel, where a per-cell flow (upsampled
    bilinearly) drags the neighbours in its cell along."""
    from astra_core.data.tokenizer import PixelTokenizer
    from astra_core.model.flow import warp

    tokenizer = PixelTokenizer(4)
    image = torch.rand(1, 3, 1, 16, 16) * 2 - 1
    latents = tokenizer.encode(image)
    cell = torch.zeros(1, 2, 1, 4, 4)
    cell[:, 0] = 0.25
    pixel = torch.zeros(1, 32, 1, 4, 4)
    pixel[:, :16] = 0.25  # x of every fine pixel, one pixel to the right
    assert torch.allclose(warp(latents, pixel, 4), warp(latents, cell, 4), atol=1e-6)

    pixel = torch.zeros(1, 32, 1, 4, 4)
    pixel[:, 5, :, 1, 1] = 0.25  # fine pixel (1, 1) of cell (1, 1): image pixel (5, 5) samples (5, 6)
    moved = tokenizer.decode(warp(latents, pixel, 4))
    changed = (moved - image).abs().amax(dim=(0, 1, 2)) > 1e-6
    assert changed.nonzero().tolist() == [[5, 5]]
    assert torch.allclose(moved[..., 5, 5], image[..., 5, 6], atol=1e-6)
    cell = torch.zeros(1, 2, 1, 4, 4)
    cell[:, 0, :, 1, 1] = 0.25
    dragged = (tokenizer.decode(warp(latents, cell, 4)) - image).abs().amax(dim=(0, 1, 2)) > 1e-6
    assert dragged.sum() > 16
    with pytest.raises(ValueError, match="flow of 3 channels"):
        warp(latents, torch.zeros(1, 3, 1, 4, 4), 4)


def test_a_per_pixel_flow_sets_the_latent_channels():
    from astra_core.config import AstraConfig, HistoryConfig, dit_preset

    flow = FlowConfig(prediction="warp", warp_unshuffle=4, warp_flow="pixel")
    assert flow.flow_channels == 32
    cfg = AstraConfig(
        dit=dit_preset("tiny", in_dim=96, out_dim=80), flow=flow, history=HistoryConfig(last_frame_channels=True)
    )
    assert cfg.latent_channels == 48
    with pytest.raises(ValueError, match="in_dim=96 must be 128"):
        AstraConfig(
            dit=dit_preset("tiny", in_dim=96, out_dim=96), flow=flow, history=HistoryConfig(last_frame_channels=True)
        )


STEPS = 120


def test_warp_prediction_learns_a_shift_that_the_action_says():
    """x̂₀ = warp(last frame, flow) + residual: a tiny model learns to move its last frame left or right as
    a one-number action says, which needs the flow, not the residual, to carry the detail."""
    from astra_core.config import ActionConfig, AstraConfig, HistoryConfig, dit_preset
    from astra_core.model.actions import AstraNet
    from astra_core.model.objective import WorldModelObjective

    torch.manual_seed(0)
    cfg = AstraConfig(
        dit=dit_preset("tiny", dim=64, ffn_dim=128, num_heads=4, num_layers=2, in_dim=16, out_dim=10),
        action=ActionConfig(action_dim=1, hidden_dim=32, zero_init=False),
        history=HistoryConfig(chunk_size=1, window=1, noise_prob=0.0, last_frame_channels=True),
        flow=FlowConfig(prediction="warp", warp_unshuffle=1, sigma_floor=0.9),
    )
    net = AstraNet(cfg)
    objective = WorldModelObjective(net)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)

    def batch(n=16):
        frame = torch.randn(n, 8, 1, 8, 8)
        frame = torch.nn.functional.avg_pool3d(frame, (1, 3, 3), stride=1, padding=(0, 1, 1)) * 3
        direction = torch.randint(0, 2, (n,)) * 2 - 1
        nxt = torch.stack([torch.roll(f, int(d), dims=-1) for f, d in zip(frame, direction)])
        actions = torch.zeros(n, 2, 1)
        actions[:, 1, 0] = direction.float()
        return torch.cat([frame, nxt], dim=2), actions

    for _ in range(STEPS):
        latents, actions = batch()
        loss, _ = objective.loss(latents, actions, None, num_history=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    latents, actions = batch(64)
    with torch.no_grad():
        true = float(objective.loss(latents, actions, None, 1, generator=torch.Generator().manual_seed(1))[0])
        flipped = float(objective.loss(latents, -actions, None, 1, generator=torch.Generator().manual_seed(1))[0])
    print(f"flipped/true {flipped / true:.2f}")
    assert flipped / true > 3.0


def test_motion_weights_move_the_loss_to_what_changed_and_keep_each_sample_at_mean_one():
    from astra_core.model.objective import MOTION_SCALE, motion_weights

    last = torch.zeros(2, 3, 1, 4, 4)
    target = torch.zeros(2, 3, 2, 4, 4)
    target[1, 0, 0, 1, 2] = 1.0  # one value of sample 1 changes fully, one by half the scale
    target[1, 2, 1, 3, 3] = -MOTION_SCALE / 2
    w = motion_weights(target, last, 9.0)
    assert torch.equal(w[0], torch.ones_like(w[0]))  # nothing moved: every value alike
    assert torch.allclose(w.mean(dim=(1, 2, 3, 4)), torch.ones(2))
    still = w[1, 1, 0, 0, 0]
    assert torch.isclose(w[1, 0, 0, 1, 2] / still, torch.tensor(10.0))
    assert torch.isclose(w[1, 2, 1, 3, 3] / still, torch.tensor(5.5))
    assert torch.equal(motion_weights(target, last, 0.0), torch.ones_like(target))
    with pytest.raises(ValueError, match="motion_weight"):
        FlowConfig(motion_weight=-1)


def _net_with_a_trained_head(flow: FlowConfig):
    """A tiny AstraNet over 4 latent channels with `flow`'s output head, whose head and action projections
    are non-zero as if trained (the head starts at zero), and inputs for it: x, t, action features."""
    from astra_core.config import ActionConfig, AstraConfig, HistoryConfig, dit_preset
    from astra_core.model.actions import AstraNet

    torch.manual_seed(0)
    net = AstraNet(
        AstraConfig(
            dit=dit_preset(
                "tiny", dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=4, out_dim=4 + flow.head_channels
            ),
            action=ActionConfig(action_dim=2, hidden_dim=16),
            history=HistoryConfig(chunk_size=1, window=2),
            flow=flow,
        )
    ).eval()
    torch.nn.init.normal_(net.dit.head.head.weight, std=0.5)
    for projection in (net.action_flow, net.action_splat):
        if projection is not None:
            torch.nn.init.normal_(projection.weight, std=0.5)
    return net, torch.randn(1, 4, 2, 4, 4), torch.rand(1, 2) * 1000, torch.randn(1, 2, 32)


def test_action_flow_moves_a_cell_by_its_matrix_times_the_action():
    """`action_flow_rank`: the network's output ends with a 2·r matrix per cell; the model returns the
    latents and the flow plus that matrix times the projected action feature, so the same network output
    moves a part one way for one action and the other way for the opposite one, and not at all where
    the matrix is zero. Without actions the added motion is absent."""
    from astra_core.config import AstraConfig, ConfigError

    net, x, t, features = _net_with_a_trained_head(FlowConfig(prediction="warp", action_flow_rank=3))
    with torch.no_grad():
        raw = net.dit(x, t, features)
        out = net(x, t, features)
        flipped = net(x, t, -features)
        none = net(x, t, None)
    assert raw.shape[1] == 12 and out.shape[1] == 6 and none.shape[1] == 6
    assert torch.equal(out[:, :4], raw[:, :4])  # the latents' residual untouched
    code = net.action_flow(features)
    jacobian = raw[:, 6:].unflatten(1, (2, 3))
    expected = raw[:, 4:6] + torch.einsum("btrfhw,bfr->btfhw", jacobian, code)
    assert torch.allclose(out[:, 4:6], expected, atol=1e-5)
    assert torch.equal(none, net.dit(x, t, None)[:, :6])
    assert not torch.allclose(out[:, 4:6], flipped[:, 4:6], atol=1e-3)
    with pytest.raises(ConfigError, match="action_flow_rank=3 needs prediction 'warp' with warp_flow 'cell'"):
        AstraConfig.from_dict({"flow": {"prediction": "warp", "warp_flow": "pixel", "action_flow_rank": 3}})


def test_cumulative_action_flow_sums_the_chunks_codes_from_the_last_history_frame():
    """`action_flow_cumulative`: every frame of the generated chunk (the last chunk_size frames) is
    warped from the last history frame, so its action code is the sum of the chunk's codes up to it;
    history frames keep their own code. The flag needs an action code to sum."""
    from astra_core.config import ActionConfig, AstraConfig, HistoryConfig, dit_preset
    from astra_core.model.actions import AstraNet

    cfg = AstraConfig(
        dit=dit_preset("tiny", dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=4, out_dim=4 + 2 + 2 * 3),
        action=ActionConfig(action_dim=2, hidden_dim=16),
        history=HistoryConfig(chunk_size=2, window=2),
        flow=FlowConfig(prediction="warp", action_flow_rank=3, action_flow_cumulative=True),
    )
    torch.manual_seed(0)
    net = AstraNet(cfg).eval()
    torch.nn.init.normal_(net.dit.head.head.weight, std=0.5)
    torch.nn.init.normal_(net.action_flow.weight, std=0.5)
    torch.nn.init.normal_(net.action_flow.bias, std=0.5)
    x, t = torch.randn(1, 4, 3, 4, 4), torch.rand(1, 3) * 1000  # one history frame, then a chunk of 2
    features = torch.randn(1, 3, 32)
    with torch.no_grad():
        raw = net.dit(x, t, features)
        out = net(x, t, features)
        code = net.action_flow(features)
    jacobian = raw[:, 6:].unflatten(1, (2, 3))
    summed = torch.stack([code[:, 0], code[:, 1], code[:, 1] + code[:, 2]], dim=1)
    expected = raw[:, 4:6] + torch.einsum("btrfhw,bfr->btfhw", jacobian, summed)
    assert torch.allclose(out[:, 4:6], expected, atol=1e-5)
    per_frame = raw[:, 4:6] + torch.einsum("btrfhw,bfr->btfhw", jacobian, code)
    assert torch.allclose(out[:, 4:6, :2], per_frame[:, :, :2], atol=1e-5)  # history and the chunk's first
    assert not torch.allclose(out[:, 4:6, 2], per_frame[:, :, 2], atol=1e-3)
    # A chunk of one frame (the KV-cached sink, or chunk_size 1) is its own sum.
    with torch.no_grad():
        one, raw_one = net(x[:, :, :1], t[:, :1], features[:, :1]), net.dit(x[:, :, :1], t[:, :1], features[:, :1])
    own = torch.einsum("btrfhw,bfr->btfhw", raw_one[:, 6:].unflatten(1, (2, 3)), code[:, :1])
    assert torch.allclose(one[:, 4:6], raw_one[:, 4:6] + own, atol=1e-5)
    with pytest.raises(ValueError, match="action_flow_cumulative needs action_flow_rank > 0"):
        FlowConfig(prediction="warp", action_flow_cumulative=True)


def test_copy_last_balance_weighs_each_sample_against_copy_last_error():
    """A clip where little moves counts as much as one where much moves: weights are the batch's mean
    copy-last error over the sample's own, floored, and a still clip is capped at 1 / floor."""
    from astra_core.model.objective import copy_last_balance

    last = torch.zeros(3, 4, 1, 2, 2)
    target = torch.zeros(3, 4, 2, 2, 2)
    target[1] += 0.1  # copy-last error 0.01
    target[2] += 0.3  # 0.09
    w = copy_last_balance(target, last, floor=0.05)
    mean = (0.0 + 0.01 + 0.09) / 3
    assert torch.allclose(w, torch.tensor([1 / 0.05, mean / 0.01, mean / 0.09]), rtol=1e-5)
    # Each weighted loss of copy-last itself is then the batch mean, whatever moved (the still clip aside).
    assert torch.allclose(w[1:] * torch.tensor([0.01, 0.09]), torch.full((2,), mean), rtol=1e-5)
    with pytest.raises(ValueError, match="balance_floor"):
        FlowConfig(balance_floor=0.0)


def test_reverse_motion_moves_a_part_whole_and_uncovers_what_was_behind_it():
    """`reverse_motion`: a square whose pixels move 2 pixels right lands whole, sampled through the
    backward flow; behind it the frame reads what lay one motion further back (the background), and
    everything else stays exactly where it was. No motion is no flow."""
    from astra_core.data.tokenizer import PixelTokenizer
    from astra_core.model.flow import reverse_motion, warp

    tokenizer = PixelTokenizer(4)
    image = torch.linspace(-1, 0, 32)[None, None, None, None, :].expand(1, 3, 1, 32, 32).clone()
    image[..., 10:15, 10:15] = 1.0
    motion = torch.zeros(1, 2, 32, 32)
    motion[:, 0, 10:15, 10:15] = 2.0
    assert torch.equal(reverse_motion(torch.zeros(1, 2, 32, 32)), torch.zeros(1, 2, 32, 32))
    back = reverse_motion(motion) / 4  # in latent cells, one vector per pixel
    per_pixel = back.unflatten(2, (8, 4)).unflatten(4, (8, 4)).permute(0, 1, 3, 5, 2, 4).reshape(1, 32, 1, 8, 8)
    moved = tokenizer.decode(warp(tokenizer.encode(image), per_pixel, 4, "bicubic"))
    # lands whole: the still pixel it covers counts e^0 against its e^(4·2)
    assert torch.allclose(moved[..., 10:15, 12:17], torch.ones(1, 3, 1, 5, 5), atol=2e-3)
    assert torch.allclose(moved[..., 10:15, 10:12], image[..., 10:15, 8:10], atol=1e-5)  # uncovered
    untouched = torch.ones(32, 32, dtype=torch.bool)
    untouched[10:15, 10:17] = False
    assert torch.allclose(moved[..., untouched], image[..., untouched], atol=1e-5)


def test_reverse_motion_lets_what_moves_cover_what_stands_still():
    """Where a moving pixel lands on one that stands still, the moving one is what the pixel shows (its
    weight e^(depth·|m|)); with depth near 0 the two would mix about evenly."""
    from astra_core.model.flow import reverse_motion

    motion = torch.zeros(1, 2, 1, 8)
    motion[:, 0, 0, 2] = 3.0  # pixel 2 moves onto pixel 5, which stays
    back = reverse_motion(motion)
    assert torch.isclose(back[0, 0, 0, 5], torch.tensor(-3.0), atol=1e-3)
    assert torch.isclose(back[0, 0, 0, 2], torch.tensor(-3.0))  # left behind: read one motion further back
    assert torch.equal(back[0, :, 0, [0, 1, 3, 4, 6, 7]], torch.zeros(2, 6))
    assert torch.isclose(reverse_motion(motion, depth=1e-6)[0, 0, 0, 5], torch.tensor(-1.5), atol=1e-3)


def test_splat_rank_adds_a_forward_motion_steered_by_the_action():
    """`splat_rank`: the network's output ends with a 2·r matrix per cell times a projection of the action
    feature, a forward motion after the flow; the estimate moves the last frame by both. Without actions
    the forward motion is zero; the option needs a warp with a flow per cell."""
    from astra_core.config import AstraConfig, ConfigError

    flow_cfg = FlowConfig(prediction="warp", action_flow_rank=2, splat_rank=3)
    assert flow_cfg.head_channels == 2 + 4 + 6
    net, x, t, features = _net_with_a_trained_head(flow_cfg)
    with torch.no_grad():
        raw = net.dit(x, t, features)
        out = net(x, t, features)
        none = net(x, t, None)
        code = net.action_splat(features)
        flow_code = net.action_flow(features)
    assert out.shape[1] == 8 and none.shape[1] == 8
    expected = torch.einsum("btrfhw,bfr->btfhw", raw[:, 10:].unflatten(1, (2, 3)), code)
    assert torch.allclose(out[:, 6:], expected, atol=1e-5)
    moved_by_flow = raw[:, 4:6] + torch.einsum("btrfhw,bfr->btfhw", raw[:, 6:10].unflatten(1, (2, 2)), flow_code)
    assert torch.allclose(out[:, 4:6], moved_by_flow, atol=1e-5)
    assert torch.equal(none[:, 6:], torch.zeros_like(none[:, 6:]))
    assert torch.equal(none[:, :6], net.dit(x, t, None)[:, :6])
    # the estimate: with no forward motion it is the plain warp, with one the frame moves further
    model = RectifiedFlow(flow_cfg)
    last = torch.rand(1, 4, 1, 4, 4)
    still = torch.cat([out[:, :6], torch.zeros_like(out[:, 6:])], dim=1)
    plain = RectifiedFlow(FlowConfig(prediction="warp")).from_last_frame(out[:, :6], last)
    assert torch.allclose(model.from_last_frame(still, last), plain, atol=1e-5)
    assert not torch.allclose(model.from_last_frame(out, last), plain, atol=1e-3)
    for bad in ({"prediction": "warp", "warp_flow": "pixel", "splat_rank": 2}, {"prediction": "data", "splat_rank": 2}):
        with pytest.raises(ConfigError, match="splat_rank=2 needs prediction 'warp' with warp_flow 'cell'"):
            AstraConfig.from_dict({"flow": bad})


def test_a_backbone_with_text_cross_attention_trains_and_rolls_out_without_a_prompt():
    """Wan2.1's preset keeps its text cross-attention (`text_dim`), so its weights load as they are;
    with no prompt the model attends to one zero text token, in training and in a rollout."""
    from astra_core.config import ActionConfig, AstraConfig, HistoryConfig, dit_preset
    from astra_core.model.actions import AstraNet
    from astra_core.model.objective import WorldModelObjective
    from astra_core.model.rollout import LatentWorldModel

    torch.manual_seed(0)
    cfg = AstraConfig(
        dit=dit_preset("tiny", dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=16, out_dim=8, text_dim=12),
        action=ActionConfig(action_dim=2, hidden_dim=16),
        history=HistoryConfig(chunk_size=1, window=2, last_frame_channels=True),
    )
    net = AstraNet(cfg)
    loss, _ = WorldModelObjective(net).loss(torch.randn(2, 8, 2, 4, 4), torch.randn(2, 2, 2), None, num_history=1)
    loss.backward()
    assert math.isfinite(float(loss)) and float(net.dit.blocks[0].cross_attn.v.bias.grad.abs().sum()) > 0
    session = LatentWorldModel(net, num_steps=2)
    session.reset(torch.randn(1, 8, 1, 4, 4))
    assert session.step(torch.randn(1, 1, 2)).shape == (1, 8, 1, 4, 4)


def test_an_anchored_warp_reads_the_first_frame_once_through_the_composed_flow():
    """`sampler.warp_anchor`: a fresh anchor gives `from_last_frame`'s frames exactly; after two
    half-pixel shifts the anchored frame is the first frame moved one whole pixel (read once, exact),
    where warping the warped frame again blurs it; the residual is carried and moved with the frame."""
    from astra_core.model.flow import WarpAnchor, warp

    flow_model = RectifiedFlow(FlowConfig(prediction="warp", warp_unshuffle=4, warp_mode="bicubic"))
    g = torch.Generator().manual_seed(5)
    first = torch.rand(1, 48, 1, 6, 6, generator=g) * 2 - 1
    output = torch.cat([torch.randn(1, 48, 2, 6, 6, generator=g) * 0.1, torch.randn(1, 2, 2, 6, 6, generator=g)], 1)
    fresh = WarpAnchor.start(first, 4)
    plain = flow_model.from_last_frame(output, first, 0.5)
    assert torch.equal(flow_model.anchored(output, fresh, 0.5)[0], plain)

    half = torch.zeros(1, 50, 1, 6, 6)
    half[:, 48] = 0.5 / 4  # half a pixel to the right, in latent cells
    once, anchor = flow_model.anchored(half, fresh)
    twice, _ = flow_model.anchored(half, anchor)
    whole = torch.zeros(1, 2, 1, 6, 6)
    whole[:, 0] = 1.0 / 4
    exact = warp(first, whole, 4, "bicubic")  # one whole pixel: no interpolation
    again = flow_model.from_last_frame(half, once)  # the plain rollout: the warped frame warped again
    inner = (..., slice(1, -1), slice(1, -1))  # away from the border
    assert torch.allclose(twice[inner], exact[inner], atol=1e-5)
    assert (again[inner] - exact[inner]).abs().max() > 0.05

    residual = torch.zeros(1, 50, 1, 6, 6)
    residual[:, :48] = 0.2
    made, anchor = flow_model.anchored(residual, fresh, residual_weight=0.5)
    assert torch.allclose(made, first + 0.1, atol=1e-5) and torch.allclose(anchor.residual, torch.full_like(first, 0.1))
    moved, _ = flow_model.anchored(half, anchor)  # the carried residual stays, moved with the frame
    assert torch.allclose(moved[inner], (once + 0.1)[inner], atol=1e-5)


def test_an_anchored_warp_starts_again_where_the_composed_flow_tears():
    """Left half moved 6 pixels right, right half 6 left: neighbours across the seam read 3 pixels apart,
    so the next anchor is the frame just made, read from its own place; a smooth shift keeps the anchor."""
    from astra_core.model.flow import WarpAnchor

    flow_model = RectifiedFlow(FlowConfig(prediction="warp", warp_unshuffle=4, warp_mode="bicubic"))
    first = torch.rand(1, 48, 1, 6, 6, generator=torch.Generator().manual_seed(6))
    tear = torch.zeros(1, 50, 1, 6, 6)
    tear[:, 48, :, :, :3], tear[:, 48, :, :, 3:] = 6 / 4, -6 / 4
    made, anchor = flow_model.anchored(tear, WarpAnchor.start(first, 4))
    assert torch.equal(anchor.frame, made[:, :, -1:]) and not anchor.disp.any() and not anchor.residual.any()
    shift = torch.zeros(1, 50, 1, 6, 6)
    shift[:, 48] = 1 / 4
    _, anchor = flow_model.anchored(shift, WarpAnchor.start(first, 4))
    assert torch.equal(anchor.frame, first) and torch.allclose(anchor.disp[:, 0, 2:-2, 2:-2], torch.ones(1, 20, 20))
