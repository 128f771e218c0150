import pytest
import torch
from _helpers import has_compiler, make_net

from astra_core.config import FlowConfig
from astra_core.errors import AstraError, ShapeError
from astra_core.model.rollout import LatentWorldModel


def _actions(n, chunk=2, seed=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, chunk, 3, generator=g) for _ in range(n)]


def _rollout(net, steps, use_kv_cache=True, guidance=2.0, seed=1, num_steps=3):
    wm = LatentWorldModel(net, guidance_scale=guidance, num_steps=num_steps, use_kv_cache=use_kv_cache, seed=seed)
    wm.reset(torch.randn(1, 8, 1, 4, 4, generator=torch.Generator().manual_seed(9)))
    return wm, [wm.step(a) for a in _actions(steps, chunk=net.config.history.chunk_size)]


@pytest.mark.parametrize("guidance,modulation", [(1.0, False), (2.0, False), (2.0, True)])
def test_cached_and_recomputed_rollouts_agree_before_the_window_slides(guidance, modulation):
    net = make_net(window=8, action_modulation=modulation)  # sink + 8 frames: 4 chunks of 2 fit
    _, cached = _rollout(net, 4, True, guidance)
    _, recomputed = _rollout(net, 4, False, guidance)
    for a, b in zip(cached, recomputed):
        assert a.shape == (1, 8, 2, 4, 4)
        assert (a - b).abs().max() <= 1e-4
    assert not torch.allclose(cached[0], cached[1])


def test_actions_change_the_rollout():
    net = make_net(window=8)
    wm1 = LatentWorldModel(net, num_steps=2, seed=0)
    wm2 = LatentWorldModel(net, num_steps=2, seed=0)
    ctx = torch.randn(1, 8, 1, 4, 4)
    wm1.reset(ctx)
    wm2.reset(ctx)
    a = torch.randn(1, 2, 3)
    assert not torch.allclose(wm1.step(a), wm2.step(-a))


def test_sliding_window_keeps_outputs_finite_and_cache_memory_bounded():
    net = make_net(window=4)  # sink + 2 chunks
    wm = LatentWorldModel(net, guidance_scale=2.0, num_steps=2, seed=0)
    wm.reset(torch.randn(1, 8, 1, 4, 4))
    sizes = []
    for actions in _actions(14):  # 14 chunks = 28 frames, 7x the window
        out = wm.step(actions)
        assert bool(torch.isfinite(out).all())
        sizes.append(wm.cache.nbytes())
        assert wm.cache.num_frames <= 1 + 4
    assert sizes[0] < max(sizes)  # grows while the window (2 chunks) fills ...
    assert sizes[4:] == [sizes[4]] * len(sizes[4:])  # ... then stops growing
    # keys + values, 2 layers, 2 branches, 4 tokens per frame, 64 channels, float32:
    # the buffer holds sink + window + the chunk being denoised, with at most 2x slack
    needed = 2 * 2 * 2 * (1 + 4 + 2) * 4 * 64 * 4
    assert sizes[-1] <= 2 * needed
    positions = wm.cache.frame_positions().tolist()
    assert positions[0] == 0 and positions[1:] == list(range(wm.frames_generated - 4, wm.frames_generated))


def test_rollout_runs_past_the_rope_table():
    net = make_net(chunk_size=8, window=8)
    wm = LatentWorldModel(net, guidance_scale=1.0, num_steps=1, seed=0)
    wm.reset(torch.randn(1, 8, 1, 2, 2))
    last = None
    while wm.frames_generated <= 1040:
        last = wm.step(torch.randn(1, 8, 3))
    assert wm.frames_generated > 1024
    assert int(wm.cache.frame_positions().max()) > 1024
    assert bool(torch.isfinite(last).all())


def test_seeded_rollouts_are_bitwise_reproducible():
    net = make_net()
    _, a = _rollout(net, 3, seed=7)
    _, b = _rollout(net, 3, seed=7)
    _, c = _rollout(net, 3, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_heun_sampler_rollout_and_bad_inputs():
    net = make_net()
    wm = LatentWorldModel(net, sampler="heun", num_steps=2)
    with pytest.raises(AstraError, match="reset"):
        wm.step(torch.zeros(1, 2, 3))
    with pytest.raises(ShapeError, match="context"):
        wm.reset(torch.zeros(1, 3, 1, 4, 4))
    # the context's actions: one row per context frame, one batch row per sample, cached or not
    for cached in (True, False):
        ctx_wm = LatentWorldModel(net, num_steps=2, use_kv_cache=cached)
        with pytest.raises(ShapeError, match=r"actions: expected \[1, 1, A\] .* got \(1, 3\)"):
            ctx_wm.reset(torch.zeros(1, 8, 1, 4, 4), torch.zeros(1, 3, 3))
        with pytest.raises(ShapeError, match=r"actions: expected \[1, 1, A\] .* got \(2, 1\)"):
            ctx_wm.reset(torch.zeros(1, 8, 1, 4, 4), torch.zeros(2, 1, 3))
        ctx_wm.reset(torch.zeros(1, 8, 1, 4, 4), torch.zeros(1, 1, 3))
        assert ctx_wm.step(torch.zeros(1, 2, 3)).shape == (1, 8, 2, 4, 4)
    wm.reset(torch.zeros(1, 8, 1, 4, 4))
    assert wm.step(torch.zeros(1, 2, 3)).shape == (1, 8, 2, 4, 4)
    with pytest.raises(ShapeError, match=r"actions: expected \[1, 2, A\]"):
        wm.step(torch.zeros(1, 3, 3))
    with pytest.raises(ShapeError, match="NaN"):
        wm.step(torch.full((1, 2, 3), float("nan")))
    with pytest.raises(ShapeError, match="sampler"):
        LatentWorldModel(net, sampler="rk45")


def test_fork_branches_without_disturbing_the_original():
    net = make_net(window=8)
    wm = LatentWorldModel(net, num_steps=2, seed=3)
    wm.reset(torch.randn(1, 8, 1, 4, 4))
    wm.step(torch.randn(1, 2, 3))
    branch = wm.fork()
    a = torch.randn(1, 2, 3)
    out_branch = branch.step(a)
    assert branch.frames_generated == wm.frames_generated + 2
    assert torch.equal(wm.step(a), out_branch)  # same state, same actions, same noise


def test_bfloat16_rollout_tracks_float32():
    net = make_net(window=8)
    _, ref = _rollout(net, 2, guidance=2.0)
    _, low = _rollout(net.to(torch.bfloat16), 2, guidance=2.0)
    for a, b in zip(ref, low):
        assert b.dtype == torch.float32 and bool(torch.isfinite(b).all())
        assert (a - b).norm() / a.norm() < 0.1


@pytest.mark.parametrize("target", ["frames", "residual"])
def test_residual_target_makes_the_zero_sample_repeat_the_last_frame(target):
    """A velocity that drives every sample to zero: with the residual target each generated frame is the
    last context frame again (over several chunks); with the frames target it is the zero latent."""
    net = make_net(window=8)
    net.config = net.config.model_copy(update={"flow": FlowConfig(target=target, residual_scale=3.0)})
    wm = LatentWorldModel(net, num_steps=4, seed=0)
    wm._velocity = lambda x, sigma, features, positions: x / sigma
    ctx = torch.randn(2, 8, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    wm.reset(ctx)
    for a in _actions(3):
        out = wm.step(a.expand(2, -1, -1))
        expected = ctx.expand_as(out) if target == "residual" else torch.zeros_like(out)
        assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("cached", [True, False])
def test_data_prediction_rollout_ends_on_the_predicted_sample(cached):
    """A network whose output is always the same latent: predicting data, every generated chunk is that
    latent (the last Euler step lands on x̂₀); read as a velocity, the same output gives something else."""
    net = make_net(window=8)
    target = torch.randn(1, 8, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    net.forward = lambda x, *args, **kwargs: target.expand(x.shape[0], -1, x.shape[2], -1, -1)
    ctx = torch.randn(2, 8, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    for prediction in ("data", "velocity"):
        net.config = net.config.model_copy(update={"flow": FlowConfig(prediction=prediction)})
        wm = LatentWorldModel(net, num_steps=6, seed=0, use_kv_cache=cached)
        wm.reset(ctx)
        for a in _actions(3):
            out = wm.step(a.expand(2, -1, -1))
            expected = target.expand_as(out)
            assert torch.allclose(out, expected, atol=1e-5) == (prediction == "data")


@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_observed_chunks_become_history_like_generated_ones(use_kv_cache):
    """Observing the chunks a rollout generated leaves the session where the rollout was: the next
    step is the same, with the cache and without."""
    net = make_net(window=8)
    generated_session, generated = _rollout(net, 2, use_kv_cache, guidance=2.0)
    observer = LatentWorldModel(net, guidance_scale=2.0, num_steps=3, use_kv_cache=use_kv_cache, seed=1)
    observer.reset(torch.randn(1, 8, 1, 4, 4, generator=torch.Generator().manual_seed(9)))
    actions = _actions(3)
    for chunk, a in zip(generated, actions):
        observer.observe(chunk, a)
    observer._generator.set_state(generated_session._generator.get_state())  # the same noise for the next step
    assert (observer.step(actions[2]) - generated_session.step(actions[2])).abs().max() <= 1e-5
    with pytest.raises(ShapeError, match="a chunk is 2 latent frames"):
        observer.observe(generated[0][:, :, :1], actions[0][:, :1])


def _conditioned_net(prediction="delta", seed=0):
    from astra_core.config import AstraConfig, HistoryConfig

    base = make_net(window=8, seed=seed).config
    cfg = AstraConfig(
        dit=base.dit.model_copy(update={"in_dim": 16}),
        action=base.action,
        history=HistoryConfig(chunk_size=2, window=8, last_frame_channels=True),
        flow=FlowConfig(prediction=prediction),
    )
    torch.manual_seed(seed)
    from astra_core.model.actions import AstraNet

    net = AstraNet(cfg)
    torch.nn.init.normal_(net.action_encoder.net[-1].weight, std=0.2)
    return net.eval()


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_last_frame_channels_keep_cached_and_recomputed_rollouts_equal(guidance):
    net = _conditioned_net("data")
    _, cached = _rollout(net, 4, True, guidance)
    _, recomputed = _rollout(net, 4, False, guidance)
    for a, b in zip(cached, recomputed):
        assert a.shape == (1, 8, 2, 4, 4) and (a - b).abs().max() <= 1e-4
    # the conditioning channels reach the output: another last frame, another chunk
    wm = LatentWorldModel(net, num_steps=2, seed=0)
    ctx = torch.randn(1, 8, 1, 4, 4)
    wm.reset(ctx)
    first = wm.step(_actions(1)[0])
    wm.reset(ctx)
    wm._last_frame = wm._last_frame + 1.0  # only the channel input changes, not the cached history
    assert not torch.allclose(first, wm.step(_actions(1)[0]), atol=1e-3)


def test_delta_prediction_starts_by_repeating_the_last_frame():
    """x̂₀ = last frame + F with F's head at zero: the untrained model's every sample is the last frame."""
    net = _conditioned_net("delta")
    wm = LatentWorldModel(net, guidance_scale=2.0, num_steps=3, seed=0)
    ctx = torch.randn(1, 8, 1, 4, 4)
    wm.reset(ctx)
    chunk = wm.step(_actions(1)[0])
    assert (chunk - ctx.expand_as(chunk)).abs().max() <= 1e-5
    net.dit.head.head.bias.data.fill_(0.5)  # a constant change is added to the last frame
    wm.reset(ctx)
    assert (wm.step(_actions(1)[0]) - (ctx + 0.5).expand(1, 8, 2, 4, 4)).abs().max() <= 1e-4


def test_last_frame_channels_need_twice_the_latent_channels():
    from astra_core.config import AstraConfig, HistoryConfig
    from astra_core.errors import ConfigError

    dit = make_net().config.dit.model_dump()
    with pytest.raises(ConfigError, match=r"dit.in_dim=8 must be 16: history.last_frame_channels"):
        AstraConfig.from_dict({"dit": dit, "history": {"chunk_size": 2, "window": 4, "last_frame_channels": True}})
    with pytest.raises(ConfigError, match="prediction 'delta' already predicts from the last frame"):
        AstraConfig.from_dict({"dit": dit, "flow": {"prediction": "delta", "target": "residual"}})
    assert isinstance(AstraConfig.from_dict({"dit": dit, "history": HistoryConfig().model_dump()}), AstraConfig)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"guidance_scale": float("nan")}, "guidance_scale=nan: must be a finite number"),
        ({"guidance_scale": float("inf")}, "guidance_scale=inf"),
        ({"guidance_scale": -1.0}, "guidance_scale=-1.0: must be a finite number, 0 or more"),
        ({"num_steps": -2}, "num_steps=-2: sampling steps must be a whole number of at least 1"),
        ({"num_steps": 0}, "num_steps=0"),
        ({"num_steps": 2.5}, "num_steps=2.5"),
    ],
)
def test_bad_sampling_settings_are_one_clear_error(options, message):
    from astra_core.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        LatentWorldModel(make_net(), **options)


def test_frames_outside_the_unit_range_are_refused_with_a_hint():
    from astra_core.data.tokenizer import PixelTokenizer
    from astra_core.world import WorldModel

    cfg = make_net().config
    from astra_core.config import ActionConfig, AstraConfig

    cfg = AstraConfig(
        dit=cfg.dit.model_copy(update={"in_dim": 48, "out_dim": 48}),
        action=ActionConfig(encoder="moae", modalities=("camera_se3",), token_dim=8, expert_hidden=8),
        history=cfg.history,
    )
    from astra_core.model.actions import AstraNet

    wm = WorldModel(AstraNet(cfg), PixelTokenizer(4))
    with pytest.raises(ShapeError, match=r"expected \[-1, 1\] \(uint8 frames\? use frames / 127.5 - 1\)"):
        wm.reset(torch.full((3, 1, 64, 64), 200.0))
    with pytest.raises(ShapeError, match="NaN"):
        wm.reset(torch.full((3, 1, 64, 64), float("nan")))


@pytest.mark.skipif(not has_compiler(), reason="torch.compile needs a C++ compiler")
def test_a_compiled_dit_rolls_out_like_the_eager_one():
    """`WorldModel(compile=True)` / `--compile` compile the DiT with dynamic shapes: the KV-cached rollout
    meets a new history length every step until the window is full, and its frames match eager's."""
    import copy

    from astra_core.apps.cli import _rollout_options, build_parser
    from astra_core.model.dit import compile_dit

    eager = make_net(seed=3, window=2)  # the window fills after one step: few shapes to compile
    compiled = copy.deepcopy(eager)
    compile_dit(compiled.dit, dynamic=True)
    context = torch.randn(1, 8, 1, 4, 4)
    runs = []
    for net in (eager, compiled):
        wm = LatentWorldModel(net, num_steps=2, seed=5)
        wm.reset(context)
        runs.append([wm.step(torch.randn(1, 2, 3, generator=torch.Generator().manual_seed(i))) for i in range(3)])
    for a, b in zip(*runs):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    args = build_parser().parse_args(["play", "--compile", "--precision", "bf16"])
    assert _rollout_options(args) == {"precision": "bf16", "compile": True}


def test_guidance_needs_a_model_trained_with_action_dropout():
    from astra_core.config import GuidanceConfig, TrainConfig
    from astra_core.errors import ConfigError

    net = make_net()
    net.config = net.config.model_copy(update={"guidance": GuidanceConfig(action_dropout=0.0, scale=1.0)})
    with pytest.raises(ConfigError, match=r"guidance_scale=1.5: this model was trained without action dropout"):
        LatentWorldModel(net, guidance_scale=1.5)
    wm = LatentWorldModel(net, guidance_scale=1.0, num_steps=1)
    assert not wm.guided
    # a training config that would ship such a model with guidance on is refused before training
    model = {"guidance": {"action_dropout": 0.0, "scale": 2.0}}
    with pytest.raises(ConfigError, match=r"model.guidance.scale=2.0 .* with action_dropout 0 set scale: 1.0"):
        TrainConfig.from_dict({"model": model}, source="run.yaml")
    assert TrainConfig.from_dict({"model": {"guidance": {"action_dropout": 0.0, "scale": 1.0}}}).steps >= 1


def test_warp_residual_is_a_rollout_default_of_the_checkpoint_and_an_option():
    """`sampler.warp_residual` (stored with the model) weighs a warp model's residual in every estimate;
    `warp_residual=` overrides it. At 0 each generated frame is the last frame moved by the flow alone;
    the weight changes the frames and nothing else about the rollout. A model that does not predict a
    warp, or a weight outside [0, 1], is refused naming the value."""
    from astra_core.config import ActionConfig, AstraConfig, HistoryConfig, SamplerConfig, dit_preset
    from astra_core.errors import ConfigError
    from astra_core.model.actions import AstraNet

    torch.manual_seed(0)
    config = AstraConfig(
        dit=dit_preset("tiny", dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=8, out_dim=10),
        action=ActionConfig(action_dim=3, hidden_dim=16),
        history=HistoryConfig(chunk_size=2, window=4),
        flow=FlowConfig(prediction="warp"),
        sampler=SamplerConfig(num_steps=1, warp_residual=0.25),
    )
    net = AstraNet(config).eval()
    torch.nn.init.normal_(net.dit.head.head.weight, std=0.3)  # a trained head: a residual and a flow

    def first_chunk(**options):
        wm = LatentWorldModel(net, seed=3, **options)
        wm.reset(torch.randn(1, 8, 1, 4, 4, generator=torch.Generator().manual_seed(1)))
        return wm.warp_residual, wm.step(_actions(1)[0])

    assert first_chunk()[0] == 0.25  # the checkpoint's default
    _, moved = first_chunk(warp_residual=0.0)
    _, full = first_chunk(warp_residual=1.0)
    _, half = first_chunk(warp_residual=0.5)
    assert not torch.allclose(moved, full, atol=1e-3)
    # one Euler step hands back x̂₀ = moved + w · residual, from the same network output
    assert torch.allclose(half, (moved + full) / 2, atol=1e-5)
    with pytest.raises(ConfigError, match=r"warp_residual=0.5: this model predicts 'velocity', not 'warp'"):
        LatentWorldModel(make_net(), warp_residual=0.5)
    for bad in (1.5, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(ConfigError, match="warp_residual="):
            LatentWorldModel(make_net(), warp_residual=bad)
    with pytest.raises(ValueError, match=r"warp_residual=2.0 must lie in \[0, 1\]"):
        SamplerConfig(warp_residual=2.0)
    with pytest.raises(ConfigError, match=r"sampler.warp_residual=0.5: only flow.prediction 'warp' has a residual"):
        AstraConfig.from_dict({"sampler": {"warp_residual": 0.5}})
    assert LatentWorldModel(make_net()).warp_residual == 1.0


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_a_forward_motion_model_rolls_out_alike_cached_and_recomputed(guidance):
    """`flow.splat_rank`: the forward motion joins the flow in every estimate of the rollout; the KV cache
    and action-free guidance (which extrapolates the motion with the rest of the output) work as for any
    warp model, and the actions move the frames through it."""
    from astra_core.config import ActionConfig, AstraConfig, HistoryConfig, dit_preset
    from astra_core.model.actions import AstraNet

    torch.manual_seed(0)
    config = AstraConfig(
        dit=dit_preset("tiny", dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=8, out_dim=8 + 2 + 4),
        action=ActionConfig(action_dim=3, hidden_dim=16),
        history=HistoryConfig(chunk_size=2, window=8),
        flow=FlowConfig(prediction="warp", splat_rank=2),
    )
    net = AstraNet(config).eval()
    torch.nn.init.normal_(net.dit.head.head.weight, std=0.3)
    torch.nn.init.normal_(net.action_encoder.net[-1].weight, std=0.5)
    torch.nn.init.normal_(net.action_splat.weight, std=0.5)
    _, cached = _rollout(net, 3, True, guidance)
    _, recomputed = _rollout(net, 3, False, guidance)
    for a, b in zip(cached, recomputed):  # the splat's floor() may send a pixel a float's width apart
        assert a.shape == (1, 8, 2, 4, 4) and (a - b).abs().max() <= 1e-3
    with torch.no_grad():
        net.action_splat.weight.zero_()
        net.action_splat.bias.zero_()
    _, still = _rollout(net, 3, True, guidance)  # no forward motion: another rollout
    assert not torch.allclose(cached[0], still[0], atol=1e-3)


@pytest.mark.parametrize("use_kv_cache,guidance", [(True, 1.0), (False, 1.0), (True, 2.0)])
def test_an_anchored_rollout_matches_the_plain_one_from_known_frames_and_then_reads_the_first_frame(
    use_kv_cache, guidance
):
    """`sampler.warp_anchor` / `warp_anchor=`: the first chunk after a known frame is the plain rollout's;
    later chunks read the context frame through the composed flows, so they differ from re-warping; an
    observed chunk anchors afresh; a fork keeps its own anchor; a model without a warp (or with
    `warp_padding: zeros`) is refused naming the option."""
    from astra_core.config import ActionConfig, AstraConfig, HistoryConfig, SamplerConfig, dit_preset
    from astra_core.errors import ConfigError
    from astra_core.model.actions import AstraNet

    torch.manual_seed(0)
    config = AstraConfig(
        dit=dit_preset("tiny", dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=8, out_dim=10),
        action=ActionConfig(action_dim=3, hidden_dim=16),
        history=HistoryConfig(chunk_size=2, window=8),
        flow=FlowConfig(prediction="warp", warp_unshuffle=2),
        sampler=SamplerConfig(num_steps=2, warp_anchor=True),
    )
    net = AstraNet(config).eval()
    torch.nn.init.normal_(net.dit.head.head.weight, std=0.05)  # a trained head: a small residual and flow
    context = torch.randn(1, 8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    actions = _actions(3)

    def rollout(**options):
        wm = LatentWorldModel(net, seed=3, use_kv_cache=use_kv_cache, guidance_scale=guidance, **options)
        wm.reset(context)
        return wm, [wm.step(a) for a in actions]

    anchored, chunks = rollout()
    assert anchored.warp_anchor  # the checkpoint's default
    plain, plain_chunks = rollout(warp_anchor=False)
    assert torch.allclose(chunks[0], plain_chunks[0], atol=1e-6)
    assert not torch.allclose(chunks[2], plain_chunks[2], atol=1e-4)
    assert torch.isfinite(torch.stack(chunks)).all()
    branch = anchored.fork()
    assert torch.equal(branch.step(actions[0]), anchored.step(actions[0]))  # the same state, the same anchor
    known = []  # the same known history for both: an observed chunk anchors afresh
    for options in ({}, {"warp_anchor": False}):
        wm = LatentWorldModel(net, seed=3, use_kv_cache=use_kv_cache, guidance_scale=guidance, **options)
        wm.reset(context)
        wm.step(actions[0])
        wm.observe(plain_chunks[1], actions[1])
        known.append(wm.step(actions[2]))
    assert torch.allclose(known[0], known[1], atol=1e-6)
    with pytest.raises(ConfigError, match=r"warp_anchor=True: this model predicts 'velocity'"):
        LatentWorldModel(make_net(), warp_anchor=True)
    with pytest.raises(ConfigError, match=r"sampler.warp_anchor: .* warp_padding 'zeros'"):
        AstraConfig.from_dict(
            {"flow": {"prediction": "warp", "warp_padding": "zeros"}, "sampler": {"warp_anchor": True}}
        )
    assert LatentWorldModel(make_net()).warp_anchor is False


def test_the_warp_anchor_flag_reaches_every_sampling_command():
    from astra_core.apps.cli import _rollout_options, build_parser

    required = {"demo": [], "rollout": ["--embodiment", "car", "--preset", "turn"], "play": []}
    for command, rest in required.items():
        for flag, value in (("--warp-anchor", True), ("--no-warp-anchor", False)):
            assert _rollout_options(build_parser().parse_args([command, *rest, flag])) == {"warp_anchor": value}
        assert "warp_anchor" not in _rollout_options(build_parser().parse_args([command, *rest]))
    assert build_parser().parse_args(["eval", "--no-warp-anchor"]).warp_anchor is False
