import json
from pathlib import Path

import pytest
import torch

from astra_core import AstraDiT, WeightLoadError, dit_preset
from astra_core.model.wan_io import (
    diffusers_config,
    export_wan_state_dict,
    load_wan_state_dict,
    to_wan_layout,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "wan2.1-t2v-1.3b.keys.json"  # copy of shared/fixtures
diffusers = pytest.importorskip("diffusers", reason="diffusers comes with the 'test' extra")


def _fixture():
    if not FIXTURE.is_file():
        pytest.skip(f"shared fixture not found at {FIXTURE}")
    return json.loads(FIXTURE.read_text())


def test_wan_1_3b_backbone_has_the_real_checkpoint_layout():
    fixture = _fixture()
    with torch.device("meta"):
        model = AstraDiT.from_preset("wan2.1-1.3b")
    exported = {k: list(v.shape) for k, v in export_wan_state_dict(model).items()}
    assert len(fixture["keys"]) == 825
    assert exported == fixture["keys"]
    cfg = fixture["config"]
    for field in (
        "dim",
        "ffn_dim",
        "num_heads",
        "num_layers",
        "in_dim",
        "out_dim",
        "text_dim",
        "freq_dim",
        "eps",
    ):
        assert getattr(model.config, field) == cfg[field], field


def test_wan_1_3b_loads_from_the_fixture_layout_on_meta():
    fixture = _fixture()
    with torch.device("meta"):
        model = AstraDiT.from_preset("wan2.1-1.3b")
        state = {k: torch.empty(shape) for k, shape in fixture["keys"].items()}
    report = load_wan_state_dict(model, state)
    assert report.layout == "wan" and len(report.loaded) == 825
    assert len(report.newly_initialised) == 60  # 30 projectors: weight + bias
    assert all(".projector." in k for k in report.newly_initialised)
    # With the action modulation, the same Wan weights load; the modulation is one more addition.
    with torch.device("meta"):
        modulated = AstraDiT.from_preset("wan2.1-1.3b", action_modulation=True)
    report = load_wan_state_dict(modulated, state)
    assert len(report.loaded) == 825 and len(report.newly_initialised) == 62
    assert {"action_modulation.weight", "action_modulation.bias"} <= set(report.newly_initialised)


def test_parameter_count_equals_diffusers_wan_transformer():
    with torch.device("meta"):
        model = AstraDiT.from_preset("wan2.1-1.3b")
        ref = diffusers.WanTransformer3DModel(**diffusers_config(model))
    ours = model.count_parameters(backbone_only=True)
    assert ours == sum(p.numel() for p in ref.parameters())
    assert round(ours / 1e9, 3) == 1.419
    projectors = model.count_parameters() - ours
    assert projectors == 30 * (1536 * 1536 + 1536)  # about 71 M


def _random_pair(seed=0):
    torch.manual_seed(seed)
    ours = AstraDiT(dit_preset("tiny", dim=96, ffn_dim=256, num_heads=4, num_layers=3, text_dim=48, attention="full"))
    ref = diffusers.WanTransformer3DModel(**diffusers_config(ours)).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.1)
    return ours.eval(), ref


def test_output_matches_diffusers_at_equal_weights():
    ours, ref = _random_pair()
    report = load_wan_state_dict(ours, ref.state_dict())
    assert report.layout == "diffusers"
    x = torch.randn(2, 16, 3, 8, 12)
    t = torch.rand(2) * 1000
    ctx = torch.randn(2, 7, 48)
    with torch.no_grad():
        a = ours(x, t, context=ctx)
        b = ref(x, t, ctx, return_dict=False)[0]
    rel = (a - b).norm() / b.norm()
    assert rel <= 1e-5, float(rel)


def test_diffusers_export_round_trips():
    ours, ref = _random_pair(1)
    load_wan_state_dict(ours, ref.state_dict())
    exported = export_wan_state_dict(ours, layout="diffusers")
    ref_sd = ref.state_dict()
    assert set(exported) == set(ref_sd)
    assert all(torch.equal(exported[k], ref_sd[k]) for k in ref_sd)
    assert to_wan_layout(exported).keys() == ours.backbone_state_dict().keys()


def test_mismatched_state_dict_lists_every_problem():
    ours, ref = _random_pair()
    state = dict(ref.state_dict())
    state.pop("blocks.0.attn1.to_q.weight")
    state["blocks.9.extra.weight"] = torch.zeros(1)
    state["proj_out.weight"] = torch.zeros(3, 96)
    with pytest.raises(WeightLoadError) as err:
        load_wan_state_dict(ours, state)
    msg = str(err.value)
    assert "missing (1): blocks.0.self_attn.q.weight" in msg
    assert "unexpected (1): blocks.9.extra.weight" in msg
    assert "head.head.weight: checkpoint (3, 96)" in msg


def test_prefixed_original_layout_loads():
    ours, _ = _random_pair()
    other, _ = _random_pair(2)
    state = {"model.diffusion_model." + k: v for k, v in export_wan_state_dict(other).items()}
    load_wan_state_dict(ours, state)
    assert all(torch.equal(ours.backbone_state_dict()[k], v) for k, v in other.backbone_state_dict().items())
