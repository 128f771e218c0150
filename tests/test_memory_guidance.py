import pytest
import torch
from _helpers import make_config, make_net

from astra_core.config import FlowConfig, HistoryConfig
from astra_core.errors import ConfigError, ShapeError
from astra_core.model.flow import RectifiedFlow
from astra_core.model.memory import BatchDraws, augment_history, segments_to_evict, sequence_chunk_ids
from astra_core.model.objective import WorldModelObjective
from astra_core.model.sampling import action_free_guidance


def test_chunk_ids_and_eviction_policy():
    assert sequence_chunk_ids(7, 1, 3).tolist() == [0, 1, 1, 1, 2, 2, 2]
    assert sequence_chunk_ids(4, 2, 2).tolist() == [0, 0, 1, 1]
    # sink + chunks of 2, window 4: the oldest non-sink chunk goes first, the sink never
    assert segments_to_evict([1, 2, 2, 2], [True, False, False, False], 4) == {1}
    assert segments_to_evict([1, 2, 2], [True, False, False], 4) == set()
    assert segments_to_evict([1, 2, 2, 2, 2], [True, False, False, False, False], 4) == {1, 2}


def test_history_config_is_validated():
    with pytest.raises(ValueError, match="multiple of chunk_size"):
        HistoryConfig(chunk_size=4, window=6)
    with pytest.raises(ValueError, match="noise_prob"):
        HistoryConfig(noise_prob=1.5)


def _history(b=64):
    return torch.randn(b, 4, 5, 2, 2, generator=torch.Generator().manual_seed(3))


def test_noise_as_mask_never_applied_with_probability_zero():
    h = _history()
    out, t = augment_history(h, HistoryConfig(noise_prob=0.0), 1000, torch.Generator().manual_seed(0))
    assert torch.equal(out, h) and torch.equal(t, torch.zeros(64, 5))


def test_noise_as_mask_spares_the_sink_and_reports_sigma_when_told():
    h = _history()
    cfg = HistoryConfig(noise_prob=1.0, noise_sigma_min=0.3, noise_sigma_max=0.6, tell_model_sigma=True)
    out, t = augment_history(h, cfg, 1000, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :, 0], h[:, :, 0]) and torch.equal(t[:, 0], torch.zeros(64))
    assert not torch.allclose(out[:, :, 1:], h[:, :, 1:])
    assert bool(((t[:, 1:] >= 300) & (t[:, 1:] <= 600)).all())
    assert bool((t[:, 1:] == t[:, 1:2]).all())  # one level per sample
    silent, t_silent = augment_history(
        h, cfg.model_copy(update={"tell_model_sigma": False}), 1000, torch.Generator().manual_seed(0)
    )
    assert torch.equal(silent, out) and torch.equal(t_silent, torch.zeros(64, 5))
    both, _ = augment_history(h, cfg.model_copy(update={"noise_frames": "all"}), 1000, torch.Generator().manual_seed(0))
    assert not torch.allclose(both[:, :, 0], h[:, :, 0])


def test_noise_probability_is_respected():
    cfg = HistoryConfig(noise_prob=0.3)
    out, _ = augment_history(_history(4000), cfg, 1000, torch.Generator().manual_seed(1))
    changed = (out != _history(4000)).flatten(1).any(dim=1).float().mean()
    assert abs(float(changed) - 0.3) < 0.03


def test_null_action_feature_is_learned_and_used_when_dropped():
    net = make_net()
    assert net.null_action.requires_grad and net.null_action.abs().sum() > 0
    actions = torch.randn(2, 3, 3)
    drop = torch.tensor([True, False])
    feats = net.action_features(actions, drop=drop)
    assert torch.equal(feats[0], net.null_action.expand(3, -1))
    assert torch.equal(feats[1], net.action_features(actions)[1])


def test_guidance_scale_one_equals_plain_conditional_velocity():
    net = make_net()
    x, t = torch.randn(2, 8, 2, 4, 4), torch.full((2, 2), 600.0)
    cond = net.action_features(torch.randn(2, 2, 3))
    null = net.null_features(2, 2)
    with torch.no_grad():
        batched = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null]))
        v_cond, v_free = batched.chunk(2)
        plain = net(x, t, cond)
    assert torch.allclose(action_free_guidance(v_cond, v_free, 1.0), plain, atol=1e-5)
    guided = action_free_guidance(v_cond, v_free, 2.0)
    assert not torch.allclose(guided, plain, atol=1e-3)
    assert torch.allclose(guided, 2 * v_cond - v_free, atol=1e-6)


def test_action_mask_and_bad_actions():
    net = make_net()
    with pytest.raises(ShapeError, match=r"actions: expected \[B, F, 3\]"):
        net.action_features(torch.zeros(1, 2, 4))
    with pytest.raises(ShapeError, match="actions: contains NaN"):
        net.action_features(torch.tensor([[[0.0, float("nan"), 0.0]]]))
    with pytest.raises(ShapeError, match="action mask"):
        net.action_features(torch.zeros(1, 2, 3), torch.ones(1, 3))
    masked = net.action_features(torch.randn(1, 2, 3), torch.zeros(1, 2))
    assert torch.allclose(masked[0, 0], masked[0, 1])  # masked values are ignored


def test_objective_trains_and_checks_its_layout():
    torch.manual_seed(0)
    net = make_net(live_actions=False).train()
    objective = WorldModelObjective(net)
    latents = torch.randn(4, 8, 5, 4, 4)
    actions = torch.randn(4, 5, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        loss, logs = objective.loss(latents, actions, None, num_history=3, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["loss"])
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    with pytest.raises(ShapeError, match="expected chunk_size=2"):
        objective.loss(latents, actions, None, num_history=2)


def test_adapter_selection_freezes_the_backbone():
    net = make_net(**{"text_dim": 16})
    trainable = net.select_adapter_parameters()
    names = {n for n, p in net.named_parameters() if p.requires_grad}
    assert names == set(net.adapter_parameter_names())
    assert len(trainable) == len(names)
    layers = net.config.dit.num_layers
    assert sum(".self_attn." in n for n in names) == layers * 10  # q k v o weights/biases + 2 norms
    assert sum(".projector." in n for n in names) == layers * 2
    assert {"null_action", "action_encoder.net.0.weight"} <= names
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert any(".cross_attn." in n for n in frozen) and any(".ffn." in n for n in frozen)
    assert "dit.patch_embedding.weight" in frozen and "dit.head.head.weight" in frozen
    assert sum(p.numel() for p in trainable) < sum(p.numel() for p in net.parameters())


def test_config_rejects_typos_with_the_field_named(tmp_path):
    from astra_core.config import AstraConfig

    path = tmp_path / "c.yaml"
    path.write_text("dit:\n  preset: tiny\nhistory:\n  chunk_sise: 4\n")
    with pytest.raises(ConfigError, match=r"history\.chunk_sise"):
        AstraConfig.from_yaml(path)
    cfg = make_config()
    path.write_text(cfg.to_yaml())
    assert AstraConfig.from_yaml(path) == cfg


def test_the_no_action_baseline_ignores_actions():
    from astra_core.config import ActionConfig

    net = make_net()
    cfg = net.config.model_copy(update={"action": net.config.action.model_copy(update={"use_actions": False})})
    blind = type(net)(cfg)
    blind.load_state_dict(net.state_dict())
    a, b = torch.randn(2, 3, 3), torch.randn(2, 3, 3)
    assert torch.equal(blind.action_features(a), blind.action_features(b))
    assert torch.equal(blind.action_features(a)[0, 0], blind.null_action)
    assert not torch.equal(net.action_features(a), net.action_features(b))
    assert ActionConfig().use_actions


def test_residual_objective_targets_the_change_from_the_last_history_frame():
    """With a network that predicts zero velocity, the loss is mean((ε − x₀)²) of what the flow models:
    for the residual target that is residual_scale × (chunk − last history frame), whatever the history."""
    net = make_net(live_actions=False)
    net.forward = lambda x, *args, **kwargs: torch.zeros_like(x)
    g = torch.Generator().manual_seed(1)
    history = torch.randn(2, 8, 3, 4, 4, generator=g)
    change = torch.randn(2, 8, 1, 4, 4, generator=g)
    chunk = history[:, :, -1:] + change.expand(-1, -1, 2, -1, -1)
    actions = torch.randn(2, 5, 3)

    def loss(config, latents):
        net.config = net.config.model_copy(update={"flow": config})
        gen = torch.Generator().manual_seed(7)
        return WorldModelObjective(net).loss(latents, actions, None, num_history=3, generator=gen)[1]["flow_loss"]

    residual = loss(FlowConfig(target="residual", residual_scale=3.0), torch.cat([history, chunk], dim=2))
    direct = loss(FlowConfig(), torch.cat([history, 3.0 * change.expand(-1, -1, 2, -1, -1)], dim=2))
    assert residual == pytest.approx(direct, rel=1e-6)
    assert residual != pytest.approx(loss(FlowConfig(), torch.cat([history, chunk], dim=2)), rel=1e-3)


def test_data_prediction_objective_scores_the_clean_chunk():
    """A network that outputs the clean chunk (history frames included) has zero loss when it predicts
    data; the same output read as a velocity has a large one. An output off by δ everywhere costs
    δ² / max(σ, floor)², averaged over the batch's noise levels."""
    net = make_net(live_actions=False)
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(4, 8, 5, 4, 4, generator=g)
    actions = torch.randn(4, 5, 3)
    offset = {"value": 0.0}
    net.forward = lambda x, *args, **kwargs: latents + offset["value"]

    def loss(prediction):
        net.config = net.config.model_copy(update={"flow": FlowConfig(prediction=prediction, sigma_floor=0.05)})
        gen = torch.Generator().manual_seed(7)
        return WorldModelObjective(net).loss(latents, actions, None, num_history=3, generator=gen)[1]

    assert loss("data")["flow_loss"] == pytest.approx(0.0, abs=1e-10)
    assert loss("velocity")["flow_loss"] > 0.5
    offset["value"] = 0.1
    sigma = RectifiedFlow(FlowConfig()).sample_sigma(4, BatchDraws(torch.Generator().manual_seed(7)))
    expected = float((0.1 / sigma.clamp(min=0.05)).pow(2).mean())
    assert loss("data")["flow_loss"] == pytest.approx(expected, rel=1e-4)


def _own_config(net, prob: float):
    history = net.config.history.model_copy(update={"own_prediction_prob": prob})
    net.config = net.config.model_copy(update={"history": history})


def test_own_history_replaces_only_the_last_history_chunk_with_the_networks_estimate():
    """The sink and the target stay as they are; the last history chunk becomes the network's x̂₀ of it,
    which with a data-predicting network that outputs a constant is exactly that constant."""
    net = make_net(live_actions=False)
    net.config = net.config.model_copy(update={"flow": FlowConfig(prediction="data")})
    net.forward = lambda x, *args, **kwargs: torch.full_like(x, 0.25)
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(3, 8, 5, 4, 4, generator=g)  # sink, one history chunk (2), target chunk (2)
    draws = BatchDraws(torch.Generator().manual_seed(0))
    out = WorldModelObjective(net).own_history(latents, torch.randn(3, 5, 3), None, 3, None, draws)
    assert out.shape == latents.shape
    assert torch.equal(out[:, :, :1], latents[:, :, :1])
    assert torch.equal(out[:, :, 3:], latents[:, :, 3:])
    assert torch.equal(out[:, :, 1:3], torch.full_like(latents[:, :, 1:3], 0.25))


def test_own_prediction_probability_changes_training_only_where_history_was_generated():
    """Probability 0, or evaluation (`own_predictions=False`), or a clip with only the sink as history:
    the loss is the one of training without it, to the last bit. With probability 1 and a generated
    history chunk the loss changes, and the step is logged as one that continued from its own estimate."""
    g = torch.Generator().manual_seed(4)
    latents = torch.randn(2, 8, 5, 4, 4, generator=g)
    actions = torch.randn(2, 5, 3)

    def loss(prob: float, num_history: int = 3, **kw):
        net = make_net()
        _own_config(net, prob)
        frames = latents[:, :, 2:] if num_history == 1 else latents
        gen = torch.Generator().manual_seed(7)
        clip_actions = actions[:, : frames.shape[2]]
        return WorldModelObjective(net).loss(frames, clip_actions, None, num_history, generator=gen, **kw)

    plain = loss(0.0)
    assert "own_history" not in plain[1]
    assert torch.equal(loss(1.0, own_predictions=False)[0], plain[0])
    assert torch.equal(loss(1.0, num_history=1)[0], loss(0.0, num_history=1)[0])
    assert loss(1.0, num_history=1)[1]["own_history"] == 0.0
    own = loss(1.0)
    assert own[1]["own_history"] == 1.0
    assert not torch.allclose(own[0], plain[0])
    with pytest.raises(ValueError, match="own_prediction_prob"):
        HistoryConfig(own_prediction_prob=1.5)


@pytest.mark.parametrize("prediction", ["velocity", "data", "edm", "delta", "warp"])
def test_denoised_is_the_clean_sample_the_velocity_stands_for(prediction):
    """For every parameterisation, velocity = (x_σ − x̂₀) / σ at the exact σ."""
    extra = 2 if prediction == "warp" else 0
    flow = RectifiedFlow(FlowConfig(prediction=prediction))
    g = torch.Generator().manual_seed(5)
    output = torch.randn(2, 4 + extra, 2, 3, 3, generator=g) * 0.3
    x = torch.randn(2, 4, 2, 3, 3, generator=g)
    last = torch.randn(2, 4, 1, 3, 3, generator=g)
    sigma = torch.tensor([0.3, 0.8])
    v = flow.velocity(output, x, sigma, floor=False, last_frame=last)
    x0 = flow.denoised(output, x, sigma, last_frame=last)
    assert torch.allclose(v, (x - x0) / sigma[:, None, None, None, None], atol=1e-5)
