import pytest
import torch
from _helpers import has_cuda

from astra_core import AstraDiT, ConfigError, ShapeError, dit_preset
from astra_core.config import DIT_PRESETS
from astra_core.model.memory import sequence_chunk_ids


def _small_dit(**kw) -> AstraDiT:
    torch.manual_seed(0)
    return AstraDiT(
        dit_preset("tiny", dim=64, ffn_dim=128, num_heads=4, num_layers=2, in_dim=8, out_dim=8, **kw)
    ).eval()


@pytest.mark.parametrize("name", sorted(DIT_PRESETS))
def test_every_preset_builds_on_meta(name):
    with torch.device("meta"):
        model = AstraDiT.from_preset(name)
    assert all(p.is_meta for p in model.parameters())
    assert model.config == DIT_PRESETS[name]


def test_tiny_preset_is_a_few_million_parameters():
    model = AstraDiT.from_preset("tiny")
    assert 1e6 < model.count_parameters() < 5e6


def test_preset_overrides_and_unknown_preset():
    assert dit_preset("tiny", num_layers=1).num_layers == 1
    with pytest.raises(ConfigError, match="unknown DiT preset 'huge'"):
        AstraDiT.from_preset("huge")
    with pytest.raises(ConfigError, match="dim_typo"):
        AstraDiT.from_preset("tiny", dim_typo=3)
    with pytest.raises(ConfigError, match="divisible"):
        AstraDiT.from_preset("tiny", dim=100, num_heads=6)


def test_forward_shapes_and_per_frame_timesteps():
    model = _small_dit()
    x = torch.randn(2, 8, 3, 8, 12)
    out = model(x, torch.rand(2, 3) * 1000)
    assert out.shape == x.shape
    assert model(x, torch.full((2,), 500.0)).shape == x.shape


def test_zero_action_feature_equals_plain_backbone_exactly():
    adapted = _small_dit()
    plain = AstraDiT(
        dit_preset("tiny", dim=64, ffn_dim=128, num_heads=4, num_layers=2, in_dim=8, out_dim=8, use_projector=False)
    )
    plain.load_state_dict(adapted.backbone_state_dict())
    x, t = torch.randn(2, 8, 3, 8, 8), torch.rand(2, 3) * 1000
    zero = torch.zeros(2, 3, 64)
    with torch.no_grad():
        assert torch.equal(adapted(x, t, zero), plain(x, t))
        assert not torch.equal(adapted(x, t, torch.randn(2, 3, 64)), plain(x, t))


def test_action_modulation_starts_neutral_then_conditions_each_frame_alone():
    plain = _small_dit()
    modulated = _small_dit(action_modulation=True)
    missing = modulated.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["action_modulation.bias", "action_modulation.weight"]
    assert "action_modulation.weight" not in modulated.backbone_state_dict()
    assert "action_modulation.weight" in modulated.adapter_parameter_names()
    x, t = torch.randn(1, 8, 4, 8, 8), torch.rand(1, 4) * 1000
    chunks = sequence_chunk_ids(4, 1, 1, x.device)  # every frame its own chunk
    features = torch.randn(1, 4, 64)
    with torch.no_grad():
        # Zero-initialised: adding the modulation to a trained model changes nothing.
        assert torch.equal(modulated(x, t, features, chunk_ids=chunks), plain(x, t, features, chunk_ids=chunks))
        torch.nn.init.normal_(modulated.action_modulation.weight, std=0.5)
        base = modulated(x, t, features, chunk_ids=chunks)
        assert not torch.allclose(base, plain(x, t, features, chunk_ids=chunks))
        # Frame 2's action modulates frame 2 (and, through attention, later frames), never earlier ones.
        changed = features.clone()
        changed[:, 2] += 1.0
        out = modulated(x, t, changed, chunk_ids=chunks)
    assert torch.equal(out[:, :, :2], base[:, :, :2])
    assert not torch.allclose(out[:, :, 2], base[:, :, 2])


def test_block_causal_attention_never_looks_ahead():
    model = _small_dit()
    ids = sequence_chunk_ids(5, context_frames=1, chunk_size=2)
    assert ids.tolist() == [0, 1, 1, 2, 2]
    x, t = torch.randn(1, 8, 5, 4, 4), torch.rand(1, 5) * 1000
    x2, t2 = x.clone(), t.clone()
    x2[:, :, 3:] = torch.randn(1, 8, 2, 4, 4)  # change the last chunk only
    t2[:, 3:] = 17.0
    with torch.no_grad():
        a = model(x, t, chunk_ids=ids)
        b = model(x2, t2, chunk_ids=ids)
    assert torch.equal(a[:, :, :3], b[:, :, :3])
    assert not torch.allclose(a[:, :, 3:], b[:, :, 3:])
    # within a chunk attention is full: changing frame 4 changes frame 3
    x3 = x.clone()
    x3[:, :, 4] += 1
    with torch.no_grad():
        c = model(x3, t, chunk_ids=ids)
    assert not torch.allclose(a[:, :, 3], c[:, :, 3])


def test_full_attention_mode_looks_everywhere():
    model = _small_dit(attention="full")
    x, t = torch.randn(1, 8, 3, 4, 4), torch.rand(1, 3) * 1000
    x2 = x.clone()
    x2[:, :, 2] += 1
    with torch.no_grad():
        assert not torch.allclose(model(x, t)[:, :, 0], model(x2, t)[:, :, 0])


def test_bad_inputs_name_the_field():
    model = _small_dit()
    x = torch.randn(1, 8, 2, 4, 4)
    with pytest.raises(ShapeError, match=r"x: expected latents \[B, 8, F, H, W\]"):
        model(torch.randn(1, 7, 2, 4, 4), torch.zeros(1))
    with pytest.raises(ShapeError, match="multiples of the patch size"):
        model(torch.randn(1, 8, 2, 5, 4), torch.zeros(1))
    with pytest.raises(ShapeError, match="timesteps: expected shape"):
        model(x, torch.zeros(1, 3))
    with pytest.raises(ShapeError, match="timesteps: contains NaN"):
        model(x, torch.tensor([float("nan")]))
    with pytest.raises(ShapeError, match=r"action_features: expected \[1, 2, 64\]"):
        model(x, torch.zeros(1), torch.zeros(1, 2, 32))
    with pytest.raises(ShapeError, match="action_features: contains NaN"):
        model(x, torch.zeros(1), torch.full((1, 2, 64), float("inf")))
    with pytest.raises(ShapeError, match="context"):
        model(x, torch.zeros(1), context=torch.zeros(1, 3, 4))
    with pytest.raises(ShapeError, match="non-decreasing"):
        model(x, torch.zeros(1), chunk_ids=torch.tensor([1, 0]))


def test_bfloat16_forward_runs_and_stays_close():
    model = _small_dit()
    x, t = torch.randn(1, 8, 2, 4, 4), torch.rand(1, 2) * 1000
    with torch.no_grad():
        ref = model(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t)
        cast = model.to(torch.bfloat16)(x.bfloat16(), t)
    assert low.dtype == torch.bfloat16 and cast.dtype == torch.bfloat16
    for out in (low, cast):
        assert (out.float() - ref).norm() / ref.norm() < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model = _small_dit()
    x, t = torch.randn(1, 8, 2, 4, 4), torch.rand(1, 2) * 1000
    with torch.no_grad():
        ref = model(x, t)
        out = model.cuda()(x.cuda(), t.cuda()).cpu()
    assert torch.allclose(out, ref, atol=1e-3, rtol=1e-3)
