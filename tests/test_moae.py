import json

import pytest
import torch
from _helpers import TINY_DIT, make_config
from torch import nn

from astra_core.config import ActionConfig
from astra_core.errors import ConfigError, ShapeError
from astra_core.modality import AlignedActions, Modality, Normalizer
from astra_core.model.actions import AstraNet
from astra_core.model.moae import FixedRouter, MoAE, Router, SharedRouter, SoftRouter, TopKRouter
from astra_core.model.objective import WorldModelObjective
from astra_core.model.rollout import LatentWorldModel
from astra_core.plugins import get_registry

ROUTERS = sorted(get_registry().routers)


def test_builtin_routers_are_registered():
    assert {"topk", "soft", "fixed", "shared"} <= set(ROUTERS)


@pytest.mark.parametrize("name", ROUTERS)
def test_router_contract(name):
    router = get_registry().routers[name]()
    router.setup(16, 4, ["a", "b", "c"])
    tokens, mods = torch.randn(10, 16), torch.randint(0, 3, (10,))
    weights, ids, aux, stats = router(tokens, mods)
    assert weights.shape == ids.shape and weights.shape[0] == 10
    assert ids.dtype == torch.long and bool(((ids >= 0) & (ids < 4)).all())
    assert torch.allclose(weights.sum(-1), torch.ones(10), atol=1e-6)
    assert aux.ndim == 0 and torch.isfinite(aux) and "entropy" in stats
    restored = get_registry().routers[name]()
    restored.setup(16, 4, ["a", "b", "c"])
    restored.load_state_dict(router.state_dict())
    assert torch.equal(restored(tokens, mods)[1], ids)


class _NoStats(SoftRouter):
    def forward(self, tokens, modality_ids):
        weights, ids, aux, _ = super().forward(tokens, modality_ids)
        return weights, ids, aux, {}


class _FloatIds(SoftRouter):
    def forward(self, tokens, modality_ids):
        weights, ids, aux, stats = super().forward(tokens, modality_ids)
        return weights, ids.float(), aux, stats


class _PastTheLastExpert(SharedRouter):
    def forward(self, tokens, modality_ids):
        weights, ids, aux, stats = super().forward(tokens, modality_ids)
        return weights, ids + self.num_experts, aux, stats


class _NoAux(SharedRouter):
    def forward(self, tokens, modality_ids):
        weights, ids, _, stats = super().forward(tokens, modality_ids)
        return weights, ids, None, stats


class _ThreeThings(SharedRouter):
    def forward(self, tokens, modality_ids):
        return super().forward(tokens, modality_ids)[:3]


class _RaggedIds(SoftRouter):
    def forward(self, tokens, modality_ids):
        weights, ids, aux, stats = super().forward(tokens, modality_ids)
        return weights, ids[:, :1], aux, stats


@pytest.mark.parametrize("name", ROUTERS)
def test_every_registered_router_passes_check_router(name):
    from astra_core import check_router

    check_router(get_registry().routers[name]())


def test_a_plugin_router_passes_the_same_contract_check():
    """A router registered by a (test-only) plugin goes through the same check as the built-ins."""
    import types

    from astra_core import check_router, hookimpl
    from astra_core.plugins import plugins, reset_plugins

    class Halves(Router):
        def setup(self, token_dim, num_experts, modality_names):
            super().setup(token_dim, num_experts, modality_names)
            self.gate = nn.Linear(token_dim, 1)

        def forward(self, tokens, modality_ids):
            first = torch.sigmoid(self.gate(tokens))
            ids = torch.tensor([0, self.num_experts - 1]).expand(len(tokens), 2)
            return torch.cat([first, 1 - first], dim=1), ids, tokens.new_zeros(()), {"entropy": 0.5}

    module = types.ModuleType("halves_plugin")
    module.astra_register_routers = hookimpl(lambda register: register("halves", Halves))
    reset_plugins()
    try:
        plugins().register_plugin(module, "halves")
        check_router(get_registry().routers["halves"]())
    finally:
        reset_plugins()


@pytest.mark.parametrize(
    "router, message",
    [
        (_NoStats(), "_NoStats: stats lack ['entropy']"),
        (_FloatIds(), "_FloatIds: expert_ids must be a long tensor"),
        (_PastTheLastExpert(), "outside [0, 3]"),
        (_NoAux(), "aux_loss must be a 0-d tensor"),
        (_ThreeThings(), "must return (weights, expert_ids, aux_loss, stats), got a 3-tuple"),
        (_RaggedIds(), "of the weights' shape"),
    ],
)
def test_a_router_that_breaks_the_contract_is_named_with_the_piece_at_fault(router, message):
    from astra_core import RouterContractError, check_router

    with pytest.raises(RouterContractError) as caught:
        check_router(router)
    assert message in str(caught.value)
    # inside a model, the same error comes from the MoAE call, not a KeyError deep in the objective
    moae = MoAE(["camera_se3"], router=type(router)(), num_experts=4, token_dim=8)
    actions = {"camera_se3": torch.randn(2, 3, 9)}
    with pytest.raises(RouterContractError, match=type(router).__name__):
        moae(actions, normalize=False)


def test_topk_router_balance_loss_is_one_when_balanced():
    router = TopKRouter(k=1)
    router.setup(4, 4, ["a"])
    with torch.no_grad():
        router.gate.weight.zero_()
    _, _, aux, _ = router(torch.randn(64, 4), torch.zeros(64, dtype=torch.long))
    assert float(aux.detach()) == pytest.approx(1.0, abs=1e-5)  # uniform probs: K · Σ f_e / K


def test_fixed_router_follows_its_table():
    router = FixedRouter({"b": 3})
    router.setup(4, 4, ["a", "b"])
    _, ids, _, _ = router(torch.randn(3, 4), torch.tensor([0, 1, 1]))
    assert ids.flatten().tolist() == [0, 3, 3]
    with pytest.raises(ShapeError, match="unknown modalities"):
        FixedRouter({"zzz": 0}).setup(4, 4, ["a"])


def _moae(**kw):
    torch.manual_seed(0)
    return MoAE(["camera_se3", "discrete_cmd", "robot_ee"], num_experts=4, token_dim=16, out_dim=24, **kw)


def test_mixed_batches_and_several_modalities_per_sample():
    moae = _moae()
    for expert in moae.experts:
        nn.init.normal_(expert.fc2.weight, std=0.1)
    cam, keys = torch.randn(3, 4, 9), torch.rand(3, 4, 12)
    cam_mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0.0]])  # sample 2 has no camera
    key_mask = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1.0]])  # sample 0 has no keys
    out = moae({"camera_se3": cam, "discrete_cmd": keys}, {"camera_se3": cam_mask, "discrete_cmd": key_mask})
    only_cam = moae({"camera_se3": cam[:1]}, {"camera_se3": cam_mask[:1]})
    only_keys = moae({"discrete_cmd": keys[2:]}, {"discrete_cmd": key_mask[2:]})
    assert out.features.shape == (3, 4, 24)
    assert torch.allclose(out.features[0], only_cam.features[0], atol=1e-6)
    assert torch.allclose(out.features[2], only_keys.features[0], atol=1e-6)
    both = out.features[1]
    sum_of_parts = (
        moae({"camera_se3": cam[1:2]}, {"camera_se3": cam_mask[1:2]}).features[0]
        + moae({"discrete_cmd": keys[1:2]}, {"discrete_cmd": key_mask[1:2]}).features[0]
    )
    assert torch.allclose(both, sum_of_parts, atol=1e-5)
    assert bool((out.features[:, 0] == 0).all())  # frame 0 has no action anywhere
    assert set(out.stats["usage"]) == {"camera_se3", "discrete_cmd"}
    assert all(abs(sum(u) - 1) < 1e-5 for u in out.stats["usage"].values())
    assert {"entropy", "balance_loss"} <= set(out.stats)


def test_moae_input_errors():
    moae = _moae()
    with pytest.raises(ShapeError, match="unknown modalities"):
        moae({"sonar": torch.zeros(1, 2, 3)})
    with pytest.raises(ShapeError, match=r"actions\['camera_se3'\]: expected \[B, F, 9\]"):
        moae({"camera_se3": torch.zeros(1, 2, 3)})
    with pytest.raises(ShapeError, match="NaN or Inf"):
        moae({"camera_se3": torch.full((1, 2, 9), float("nan"))})


def _moae_net(encoder: str = "moae", **action):
    cfg = make_config().model_copy(
        update={
            "action": ActionConfig(
                encoder=encoder, modalities=("camera_se3", "discrete_cmd"), token_dim=16, expert_hidden=32, **action
            )
        }
    )
    torch.manual_seed(0)
    return AstraNet(cfg).eval()


def test_adding_moae_leaves_the_backbone_output_unchanged():
    net = _moae_net()
    x, t = torch.randn(2, 8, 3, 4, 4), torch.rand(2, 3) * 1000
    feats = net.action_features({"camera_se3": torch.randn(2, 3, 9), "discrete_cmd": torch.rand(2, 3, 12)})
    assert bool((feats == 0).all())
    with torch.no_grad():
        assert torch.equal(net(x, t, feats), net.dit(x, t, None))


@pytest.mark.parametrize("encoder", ["moae", "shared", "mlp"])
def test_zero_init_false_lets_actions_reach_the_backbone_from_the_start(encoder):
    """`action.zero_init: false` (training from scratch): at init the features already depend on the actions."""
    net = _moae_net(encoder, zero_init=False)
    if encoder == "mlp":
        first, second = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    else:
        first = {"camera_se3": torch.randn(2, 3, 9), "discrete_cmd": torch.rand(2, 3, 12)}
        second = {"camera_se3": torch.randn(2, 3, 9), "discrete_cmd": torch.rand(2, 3, 12)}
    a, b = net.action_features(first), net.action_features(second)
    assert float(a.abs().mean()) > 1e-3 and float((a - b).abs().mean()) > 1e-3
    x, t = torch.randn(2, 8, 3, 4, 4), torch.rand(2, 3) * 1000
    with torch.no_grad():
        assert not torch.allclose(net(x, t, a), net(x, t, b))
    zeroed = _moae_net(encoder)  # the default: the adapter starts silent
    assert bool((zeroed.action_features(first) == 0).all())


def test_moae_world_model_trains_and_rolls_out():
    net = _moae_net().train()
    objective = WorldModelObjective(net)
    actions = {"camera_se3": torch.randn(2, 5, 9), "discrete_cmd": torch.rand(2, 5, 12)}
    masks = {"camera_se3": torch.tensor([[0, 1, 1, 1, 1], [0, 0, 0, 0, 0.0]]), "discrete_cmd": torch.ones(2, 5)}
    loss, logs = objective.loss(torch.randn(2, 8, 5, 4, 4), actions, masks, num_history=3)
    loss.backward()
    assert logs["aux_loss"] > 0 and set(logs["router_usage"]) == {"camera_se3", "discrete_cmd"}
    assert net.moae.experts[0].fc2.weight.grad is not None
    wm = LatentWorldModel(net.eval(), num_steps=2)
    wm.reset(torch.randn(1, 8, 1, 4, 4))
    out = wm.step({"discrete_cmd": torch.rand(1, 2, 12)})
    assert out.shape == (1, 8, 2, 4, 4)
    with pytest.raises(ShapeError, match="pass a dict"):
        wm.step(torch.zeros(1, 2, 9))


# ---- the router learns ----------------------------------------------------------------------


class _Plain(Modality):
    """A synthetic modality whose encoder is linear, so that the experts must do the work."""

    action_dim = 4

    def __init__(self, name):
        self.name = name

    def align(self, raw, temporal_factor):
        return AlignedActions(raw, raw[:, 0] * 0 + 1)

    def normalizer(self):
        return Normalizer(4)

    def encoder(self, token_dim):
        return _Linear(token_dim)


class _Linear(nn.Module):
    def __init__(self, token_dim):
        super().__init__()
        self.proj = nn.Linear(4, token_dim)

    def forward(self, x, mask):
        return self.proj(x)


def _task_loss(router, steps=600, seed=0):
    """Two modalities that need different functions of similar-looking inputs; small experts."""
    torch.manual_seed(seed)
    moae = MoAE(
        [_Plain("alpha"), _Plain("beta")], router=router, num_experts=4, token_dim=8, out_dim=4, expert_hidden=8
    )
    target = {"alpha": lambda x: x**2, "beta": lambda x: -(x**2)}  # opposite answers to alike inputs
    opt = torch.optim.Adam(moae.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        batch = {name: torch.randn(64, 1, 4, generator=gen) for name in target}
        masks = {"alpha": torch.ones(64, 1), "beta": torch.ones(64, 1)}
        masks["alpha"][32:] = 0  # first half of the batch carries alpha, second half beta
        masks["beta"][:32] = 0
        out = moae(batch, masks)
        want = torch.cat([target["alpha"](batch["alpha"][:32]), target["beta"](batch["beta"][32:])])
        loss = (out.features - want).pow(2).mean()
        opt.zero_grad()
        (loss + 0.01 * out.aux_loss).backward()
        opt.step()
        losses.append(float(loss.detach()))
    return sum(losses[-30:]) / 30, out.stats["usage"]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_learnable_router_learns_to_split_modalities(seed):
    topk, usage = _task_loss(TopKRouter(k=2), seed=seed)
    fixed, _ = _task_loss(FixedRouter({"alpha": 0, "beta": 1}), seed=seed)
    shared, _ = _task_loss(SharedRouter(), seed=seed)
    soft, _ = _task_loss(SoftRouter(), seed=seed)
    print(f"final task loss: topk {topk:.4f} fixed {fixed:.4f} shared {shared:.4f} soft {soft:.4f}; usage {usage}")
    assert topk <= fixed * 1.05
    assert shared > 1.5 * topk
    # the two modalities end up on different experts
    top_alpha = max(range(4), key=lambda e: usage["alpha"][e])
    assert usage["beta"][top_alpha] < usage["alpha"][top_alpha]


def test_normaliser_statistics_travel_in_checkpoints(tmp_path):
    from astra_core.checkpoint import load_checkpoint, save_checkpoint

    net = _moae_net()
    data = torch.randn(50, 9) * 3 + 1
    net.moae.normalizers["camera_se3"].fit(data)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", net))
    norm = loaded.moae.normalizers["camera_se3"]
    assert bool(norm.fitted) and torch.allclose(norm.mean, data.mean(0)) and torch.allclose(norm.std, data.std(0))
    assert not bool(loaded.moae.normalizers["discrete_cmd"].fitted)


def test_a_dimension_flat_in_the_fitting_data_keeps_the_scale_1(tmp_path):
    """The toy camera never rolls: its roll never varied when the normaliser was fitted. A user's stream
    that rolls must reach the encoder centred and unscaled, not multiplied by 1/eps."""
    from astra_core.checkpoint import load_checkpoint, save_checkpoint

    data = torch.randn(50, 9)
    data[:, 4] = 0.25  # flat
    norm = Normalizer(9).fit(data)
    assert norm.std[4] == 1.0 and torch.allclose(norm.std[:4], data[:, :4].std(0))
    rolled = data[:3].clone()
    rolled[:, 4] = 0.75
    assert torch.allclose(norm(rolled)[:, 4], torch.full((3,), 0.5))
    assert torch.allclose(norm(data)[:, 4], torch.zeros(50))  # the fitting data: 0, as with any scale

    net = _moae_net()  # a checkpoint written when flat dimensions stored the floor eps reads as scale 1
    camera = net.moae.normalizers["camera_se3"].fit(torch.randn(50, 9))
    camera.std[[1, 7]] = camera.eps
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", net)).moae.normalizers["camera_se3"]
    assert loaded.std[1] == 1.0 and loaded.std[7] == 1.0 and torch.equal(loaded.std[[0, 2]], camera.std[[0, 2]])


def _combinators():
    from astra_core.model.moae import MixtureRouter, PerModalityRouter

    return [
        PerModalityRouter({"a": FixedRouter(), "b": TopKRouter(k=1)}, default=None),
        PerModalityRouter({"b": SoftRouter()}),
        MixtureRouter([FixedRouter(), TopKRouter(k=2)]),
        MixtureRouter(
            [PerModalityRouter({"a": SharedRouter()}, default="soft"), {"name": "topk", "options": {"k": 1}}]
        ),
    ]


@pytest.mark.parametrize("index", range(4))
def test_composed_routers_keep_the_contract_and_their_spec_round_trips(index):
    from astra_core import check_router
    from astra_core.model.moae import build_router, router_spec

    router = _combinators()[index]
    check_router(router)
    spec = router_spec(router)
    assert json.loads(json.dumps(spec)) == spec  # plain JSON, nested for combinators
    rebuilt = build_router(spec)
    check_router(rebuilt)
    rebuilt.load_state_dict(router.state_dict())
    tokens, mods = torch.randn(7, 8), torch.tensor([0, 1, 0, 1, 1, 0, 0])
    for a, b in zip(router(tokens, mods)[:2], rebuilt(tokens, mods)[:2]):
        assert torch.equal(a, b)


def test_per_modality_routing_sends_each_modality_through_its_own_router():
    from astra_core.model.moae import PerModalityRouter

    router = PerModalityRouter({"a": FixedRouter({"a": 3}), "b": SharedRouter()}, default=None)
    router.setup(8, 4, ["a", "b"])
    weights, ids, _, _ = router(torch.randn(4, 8), torch.tensor([0, 1, 1, 0]))
    assert ids[:, 0].tolist() == [3, 0, 0, 3] and torch.equal(weights, torch.ones(4, 1))
    with pytest.raises(ConfigError, match=r"no router for \['b'\]"):
        PerModalityRouter({"a": FixedRouter()}, default=None).setup(8, 4, ["a", "b"])
    with pytest.raises(ConfigError, match=r"routers for \['sonar'\]"):
        PerModalityRouter({"sonar": FixedRouter()}).setup(8, 4, ["a", "b"])


def test_a_router_composed_in_python_saves_loads_and_shows_in_info(tmp_path, capsys):
    """ActionConfig takes the router object and stores its spec; the checkpoint rebuilds it."""
    from astra_core.apps.cli import main
    from astra_core.checkpoint import load_checkpoint, save_checkpoint
    from astra_core.config import AstraConfig, dit_preset
    from astra_core.model.moae import MixtureRouter, PerModalityRouter

    router = MixtureRouter([FixedRouter({"camera_se3": 1}), PerModalityRouter({"robot_ee": TopKRouter(k=1)})])
    cfg = AstraConfig(
        dit=dit_preset("tiny", dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=16, out_dim=16),
        action=ActionConfig(
            encoder="moae", modalities=("camera_se3", "robot_ee"), router=router, token_dim=8, expert_hidden=8
        ),
    )
    assert cfg.action.router == "mixture"
    assert cfg.action.router_options["routers"][0] == {"name": "fixed", "options": {"table": {"camera_se3": 1}}}
    torch.manual_seed(0)
    net = AstraNet(cfg)
    for expert in net.moae.experts:
        torch.nn.init.normal_(expert.fc2.weight, std=0.1)
    path = save_checkpoint(tmp_path / "m.safetensors", net)
    loaded = load_checkpoint(path)
    actions = {"camera_se3": torch.randn(2, 3, 9), "robot_ee": torch.randn(2, 3, 7)}
    assert torch.equal(net.moae(actions).features, loaded.moae(actions).features)
    assert main(["info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["action"]["router_options"]["routers"][1]["name"] == "per_modality"


def test_yaml_composes_routers_by_spec():
    from astra_core.config import TrainConfig
    from astra_core.model.moae import PerModalityRouter

    cfg = TrainConfig.from_dict(
        {
            "model": {
                "dit": TINY_DIT,
                "action": {
                    "encoder": "moae",
                    "modalities": ["camera_se3", "robot_ee"],
                    "router": "per_modality",
                    "router_options": {"routers": {"camera_se3": {"name": "fixed"}}, "default": {"name": "soft"}},
                    "token_dim": 8,
                    "expert_hidden": 8,
                },
            }
        }
    )
    net = AstraNet(cfg.model)
    assert isinstance(net.moae.router, PerModalityRouter)
    assert isinstance(net.moae.router.routers["camera_se3"], FixedRouter)
    assert isinstance(net.moae.router.default, SoftRouter)


def test_an_unregistered_router_class_cannot_be_stored():
    from astra_core import RouterContractError
    from astra_core.model.moae import router_spec

    class Private(SharedRouter):
        pass

    with pytest.raises(RouterContractError, match="Private is not a registered router"):
        router_spec(Private())
