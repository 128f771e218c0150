"""Typed configs (pydantic v2, unknown keys rejected) for the model, objective, memory and rollout.

Every config round-trips through YAML and JSON; the resolved `AstraConfig` is stored inside each
checkpoint so that a checkpoint alone rebuilds its model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from astra_core.errors import ConfigError


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DiTConfig(_Config):
    """The Wan2.1 DiT backbone (field names follow Wan's) plus Astra's changes."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = Field(12, gt=0)
    num_layers: int = 30
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int | None = Field(4096, gt=0)  # None: no text cross-attention
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = Field(1e-6, gt=0)
    cross_attn_norm: bool = True
    rope_theta: float = Field(10000.0, gt=0)
    # Astra's additions
    use_projector: bool = True  # ACT-Adapter projector Linear(dim, dim) after self-attention, identity-initialised
    # Also add each frame's action feature, through a zero-initialised Linear(dim, dim), to that frame's
    # time embedding, so the action drives the AdaLN shift/scale/gate of every block and of the head
    # (multiplicative conditioning, beside the paper's additive self-attention input).
    action_modulation: bool = False
    attention: Literal["block_causal", "full"] = "block_causal"

    @model_validator(mode="after")
    def _check(self) -> DiTConfig:
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        head_dim = self.dim // self.num_heads
        if head_dim % 2 or head_dim < 6:
            raise ValueError(f"head dim dim/num_heads={head_dim} must be even and at least 6 (3-D RoPE)")
        if self.patch_size[0] != 1:
            raise ValueError("patch_size[0] must be 1: Astra gives every latent frame its own timestep")
        if min(self.patch_size) < 1:
            raise ValueError(f"patch_size={list(self.patch_size)}: every entry must be 1 or more")
        for name in ("dim", "ffn_dim", "num_layers", "in_dim", "out_dim", "freq_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        return self

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


DIT_PRESETS: dict[str, DiTConfig] = {
    # CPU-sized: about 2 M parameters, no text conditioning.
    "tiny": DiTConfig(dim=192, ffn_dim=768, num_heads=6, num_layers=4, text_dim=None),
    # The benchmark size: dim 384, 8 layers.
    "small": DiTConfig(dim=384, ffn_dim=1536, num_heads=6, num_layers=8, text_dim=None),
    "base": DiTConfig(dim=768, ffn_dim=3072, num_heads=12, num_layers=12, text_dim=None),
    # Wan2.1-T2V-1.3B: the released Astra backbone.
    "wan2.1-1.3b": DiTConfig(),
}


def dit_preset(name: str, **overrides: Any) -> DiTConfig:
    """The preset `name` with `overrides` applied (validated)."""
    if name not in DIT_PRESETS:
        raise ConfigError(f"unknown DiT preset {name!r}; choose one of {sorted(DIT_PRESETS)}")
    try:
        return DiTConfig(**{**DIT_PRESETS[name].model_dump(), **overrides})
    except ValidationError as err:
        raise ConfigError(f"bad override for preset {name!r}: {_describe(err)}") from None


def _holds_router(value: Any) -> bool:
    from torch import nn

    if isinstance(value, nn.Module):
        return True
    if isinstance(value, dict):
        return any(_holds_router(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_router(v) for v in value)
    return False


class ActionConfig(_Config):
    """The action path from per-latent-frame action vectors to the DiT's action features.

    encoder "mlp": one encoder over a single action vector of width `action_dim` that the caller
    supplies; "moae": a Mixture of Action Experts over named modalities; "shared": the MoAE ablation,
    named modalities normalised each on its own, zero-padded to one width and sent through one shared
    encoder (no experts, no routing).
    """

    encoder: Literal["mlp", "moae", "shared"] = "mlp"
    use_actions: bool = True  # False: the no-action baseline (every frame gets the null action feature)
    action_dim: int = 7
    hidden_dim: int = Field(256, ge=1)
    modalities: tuple[str, ...] = ()
    # A registered router's name, and the keyword arguments of its class (e.g. {"k": 2} for "topk"; empty:
    # the router's own defaults). A combinator's options hold other routers' specs, {"name": ..., "options":
    # {...}}. From Python, `router` may also be a Router object (or a spec dict): it is stored as its spec.
    router: str = "topk"
    router_options: dict[str, Any] = {}
    num_experts: int = 4
    token_dim: int = Field(128, ge=1)
    expert_hidden: int = Field(256, ge=1)
    aux_loss_weight: float = Field(0.01, ge=0.0)
    # The encoder's output layer starts at zero, so attaching the action path to a trained backbone leaves
    # its output unchanged (ACT-Adapter fine-tuning). False: the default init, so the actions reach the
    # attention input from the first step of a model trained from scratch.
    zero_init: bool = True

    @model_validator(mode="before")
    @classmethod
    def _router_as_spec(cls, data: Any) -> Any:
        """A Router object or spec dict in `router` (or Router objects inside `router_options`) becomes
        the serialisable name + options."""
        if not isinstance(data, dict):
            return data
        router, options = data.get("router"), data.get("router_options")
        needs = not isinstance(router, (str, type(None))) or _holds_router(options)
        if not needs:
            return data
        from astra_core.model.moae import _spec_values, router_spec

        data = dict(data)
        if not isinstance(router, (str, type(None))):
            spec = router_spec(router)
            if options:
                raise ValueError("give the router's options inside the router (object or spec), not in router_options")
            data["router"], data["router_options"] = spec["name"], spec["options"]
        else:
            data["router_options"] = _spec_values(options)
        return data

    @model_validator(mode="after")
    def _check(self) -> ActionConfig:
        if self.encoder in ("moae", "shared") and not self.modalities:
            raise ValueError(f"encoder {self.encoder!r} needs at least one entry in 'modalities'")
        if self.action_dim < 1 or self.num_experts < 1:
            raise ValueError("action_dim and num_experts must be positive")
        return self


class FlowConfig(_Config):
    """Rectified flow: x_σ = (1−σ)·x₀ + σ·ε, target v = ε − x₀."""

    shift: float = 5.0  # Wan's timestep shift σ' = sσ / (1 + (s−1)σ)
    num_train_timesteps: int = Field(1000, gt=0)  # the DiT sees t = σ · num_train_timesteps
    loss_weighting: Literal["uniform", "gaussian"] = "uniform"
    weighting_center: float = 0.5  # gaussian bump centre, as σ
    weighting_width: float = Field(0.25, gt=0)
    # "frames": the flow models the target chunk itself. "residual": it models the chunk minus the last
    # history frame, times `residual_scale`, so repeating the last frame is the zero prediction and the
    # model's capacity goes to what moves. History stays in frames either way.
    target: Literal["frames", "residual"] = "frames"
    residual_scale: float = 1.0
    # What the network outputs. "velocity": v = ε − x₀ directly. "data": the clean sample x₀, turned into
    # v = (x_σ − x₀)/σ for the same velocity loss (σ floored at sigma_floor in training) and the same
    # samplers. Predicting data suits tokens as wide as the network (a 2×2 patch of 4×4-pixel tokens is
    # 192 values, the tiny preset's width), where passing the noise through to a velocity is the hard part.
    # "edm": the clean sample with a skip connection, x̂₀ = c_skip(σ)·x_σ + c_out(σ)·F (Karras et al. 2022,
    # in rectified-flow form, data spread `sigma_data`): near σ = 0 the input passes through and the network
    # only corrects it; near σ = 1 the network predicts the data.
    # With "data" the loss is |x̂₀ − x₀|²/max(σ, sigma_floor)². A low floor (0.05) weighs the small-σ
    # samples, where the task is to hand the input back, up to 400× more than σ = 1, where history and
    # actions decide the picture; the toy network then learned to ignore its actions. A floor of 0.9 (the
    # toy recipe's) weighs the x̂₀ error about evenly over σ (docs/results.md measures both).
    # "delta": the clean sample as a change from the last history frame, x̂₀ = x_last + F: a network whose
    # output head starts near zero begins by repeating the last frame, keeps still pixels exactly, and spends
    # its capacity on what moves. Loss and samplers as for "data".
    # "warp": the clean sample as the last history frame warped by a flow field plus a residual: the DiT
    # outputs C + 2 channels (out_dim = latent channels + 2), the residual and a flow per generated frame
    # in latent cells; motion then moves the last frame's detail instead of redrawing it. `warp_unshuffle`:
    # the latents are a space-to-depth of images this many times finer (the pixel tokenizer's patch), which
    # are warped at their own resolution; 1 warps the latents themselves (a VAE's).
    prediction: Literal["velocity", "data", "edm", "delta", "warp"] = "velocity"
    warp_unshuffle: int = 1
    # interpolation of the warp's samples; "catmull_rom": cubic like "bicubic" (grid_sample's, a = −0.75) but
    # with a = −0.5, whose gain never exceeds 1, so a rollout's repeated warps do not ring (flow.catmull_rom_sample)
    warp_mode: Literal["bilinear", "bicubic", "catmull_rom"] = "bilinear"
    # What the warp reads past the frame's edge, where a turning camera brings new view in. "border": the
    # edge's pixels, repeated (the residual then corrects a streak of the edge's colour); "zeros": nothing,
    # so the residual alone draws what enters, and counts fully there when sampling whatever
    # `sampler.warp_residual` (weighed by the share of each sample that falls outside).
    warp_padding: Literal["border", "zeros"] = "border"
    # "cell": one flow vector per latent cell (2 output channels), upsampled bilinearly to the pixels;
    # "pixel": one per pixel of the unshuffled images (2·warp_unshuffle² channels), so a thin moving part
    # can move without dragging its surroundings along.
    warp_flow: Literal["cell", "pixel"] = "cell"
    # Weight of what moves in the loss: each latent value's squared error is weighed 1 + motion_weight·m,
    # m = min(1, |x₀ − x_last| / 0.1) its change from the last history frame, then the weights of each
    # sample are scaled to mean 1. 0 weighs every value alike; more turns the loss of a world where a
    # thin part moves over a still scene (the arm) towards that part, without changing how much each
    # sample counts.
    motion_weight: float = Field(0.0, ge=0)
    # How much each sample counts. "none": alike. "copy_last": each sample's loss is divided by how far
    # its target frames are from the last history frame (copy-last-frame's error, floored at
    # `balance_floor` times the batch's mean), then scaled by the batch's mean, so a clip where little
    # moves (a thin arm over a still table) counts as much as a turning camera: the loss follows the
    # improvement over copy-last, which is what the margin in dB measures.
    loss_balance: Literal["none", "copy_last"] = "none"
    balance_floor: float = Field(0.05, gt=0, le=1)
    # Motion linear in the action (prediction "warp", a flow per cell): besides its flow, the network
    # outputs at every cell a 2 x r matrix J, the frame's action feature is projected to r numbers a, and
    # the flow gains J·a. Where nothing moves J is zero whatever the action; where a part moves (the
    # arm's beads), the action steers it: a product of content and action that the per-frame action
    # modulation can only approximate. 0: off. The DiT's out_dim grows by 2·r.
    action_flow_rank: int = Field(0, ge=0)
    # Every frame of a generated chunk is warped from the same last history frame, so the motion that
    # leads to its k-th frame is that of actions 1..k: with this, the k-th frame's action code is the sum
    # of the codes of the chunk's frames up to k, each frame's code standing for the motion it adds.
    # Off (each frame its own action's code) in checkpoints from before it existed.
    action_flow_cumulative: bool = False
    # Motion that carries pixels forwards (prediction "warp", a flow per cell): the network also outputs at
    # every cell a 2 x r matrix S, the frame's action feature is projected to r more numbers b, and S·b is
    # where the cell's pixels go. It is turned into a backward flow at pixel resolution (each pixel's
    # motion splatted to where it lands; where motions meet the one that moves more wins, and behind a
    # moving part the pixels read what it uncovers) and added to the flow, so the frame is still sampled
    # once (by warp_mode). A part the action moves (the arm's end effector) then needs S only where the part
    # is now; a backward flow must find where it will be, which depends on the action. 0: off; the DiT's
    # out_dim grows by 2·r.
    splat_rank: int = Field(0, ge=0)
    # Where forward motions meet, each counts e^(splat_depth · its length in pixels).
    splat_depth: float = Field(4.0, gt=0)
    sigma_floor: float = 0.05
    sigma_data: float = 0.5

    @model_validator(mode="after")
    def _check(self) -> FlowConfig:
        if self.shift <= 0:
            raise ValueError(f"shift={self.shift} must be positive")
        if self.residual_scale <= 0:
            raise ValueError(f"residual_scale={self.residual_scale} must be positive")
        if not 0 < self.sigma_floor < 1:
            raise ValueError(f"sigma_floor={self.sigma_floor} must lie in (0, 1)")
        if self.sigma_data <= 0:
            raise ValueError(f"sigma_data={self.sigma_data} must be positive")
        if self.prediction in ("delta", "warp") and self.target == "residual":
            raise ValueError(
                f"prediction {self.prediction!r} already predicts from the last frame; use target 'frames'"
            )
        if self.warp_unshuffle < 1:
            raise ValueError(f"warp_unshuffle={self.warp_unshuffle} must be at least 1")
        if self.action_flow_cumulative and not self.action_flow_rank:
            raise ValueError("action_flow_cumulative needs action_flow_rank > 0 (there is no action code to sum)")
        if self.splat_rank and (self.prediction != "warp" or self.warp_flow != "cell"):
            raise ValueError(
                f"splat_rank={self.splat_rank} needs prediction 'warp' with warp_flow 'cell' "
                f"(here {self.prediction!r}, {self.warp_flow!r})"
            )
        if self.action_flow_rank and (self.prediction != "warp" or self.warp_flow != "cell"):
            raise ValueError(
                f"action_flow_rank={self.action_flow_rank} needs prediction 'warp' with warp_flow 'cell' "
                f"(here {self.prediction!r}, {self.warp_flow!r})"
            )
        return self

    @property
    def flow_channels(self) -> int:
        """Output channels the flow field takes: 0 unless `prediction` is "warp"; then 2 per latent cell,
        or 2 per pixel of the unshuffled images (`warp_flow: pixel`)."""
        if self.prediction != "warp":
            return 0
        return 2 * self.warp_unshuffle**2 if self.warp_flow == "pixel" else 2

    @property
    def head_channels(self) -> int:
        """Output channels beyond the latents: the flow's, and the 2·r of `action_flow_rank`'s and of
        `splat_rank`'s matrices."""
        return self.flow_channels + 2 * self.action_flow_rank + 2 * self.splat_rank


class HistoryConfig(_Config):
    """Which history latents the model sees, and the noise-as-mask augmentation of them."""

    chunk_size: int = 4  # latent frames generated per step
    context_frames: int = 1  # latent frames of the first (sink) chunk
    window: int = 8  # recent history latent frames kept besides the sink (training: data.history_chunks × chunk_size)
    noise_prob: float = 0.5  # probability that a training sample's history is noised
    noise_sigma_min: float = 0.1
    noise_sigma_max: float = 0.7
    noise_frames: Literal["recent", "all"] = "recent"  # "recent": every history frame but the sink
    tell_model_sigma: bool = False  # give noised history the timestep σ_h·T instead of 0
    # Spatially aligned conditioning: every frame of the generated chunk also gets the latents of the last
    # history frame (noise-augmented with the history) on extra input channels, so each token sees the
    # pixels it continues at its own position, besides attending to the history (DIAMOND stacks its
    # conditioning frames on channels; Wan2.1's image-to-video model concatenates its conditioning latents).
    # History frames get zeros there, so their keys and values stay cacheable. The DiT's in_dim is then
    # twice its out_dim (the latent channels).
    last_frame_channels: bool = False
    # Rollout robustness: on this fraction of training steps, each clip's last history chunk is replaced by
    # the model's own estimate of it (x̂₀ from one pass at σ ~ U(0.5, 1), from the frames before it and the
    # true actions; no gradient), so the model learns to continue from frames it made, as it must in a
    # rollout, where a blurred or misplaced object would otherwise be carried on or fade. Clips with no
    # generated history chunk (only the sink) are left as they are. 0 (off) keeps training as before.
    own_prediction_prob: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> HistoryConfig:
        if self.chunk_size < 1 or self.context_frames < 1:
            raise ValueError("chunk_size and context_frames must be at least 1")
        if self.window < self.chunk_size or self.window % self.chunk_size:
            raise ValueError(f"window={self.window} must be a positive multiple of chunk_size={self.chunk_size}")
        if not 0.0 <= self.noise_prob <= 1.0:
            raise ValueError(f"noise_prob={self.noise_prob} must lie in [0, 1]")
        if not 0.0 <= self.noise_sigma_min <= self.noise_sigma_max <= 1.0:
            raise ValueError("need 0 <= noise_sigma_min <= noise_sigma_max <= 1")
        if not 0.0 <= self.own_prediction_prob <= 1.0:
            raise ValueError(f"own_prediction_prob={self.own_prediction_prob} must lie in [0, 1]")
        return self


class GuidanceConfig(_Config):
    """Action-free guidance, Astra §3: drop actions in training, extrapolate away from v(∅) at inference."""

    action_dropout: float = 0.1
    scale: float = Field(2.0, ge=0.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check(self) -> GuidanceConfig:
        if not 0.0 <= self.action_dropout < 1.0:
            raise ValueError(f"action_dropout={self.action_dropout} must lie in [0, 1)")
        return self


class SamplerConfig(_Config):
    """Inference defaults, stored with the model: every rollout uses them unless told otherwise."""

    name: Literal["euler", "heun"] = "euler"
    num_steps: int = 10
    # With `flow.prediction: warp`, the weight of the network's residual on top of the warped last frame in
    # each estimate of the clean chunk (the last sampling step hands that estimate back as the frame). 1 is
    # the trained model as is; below 1 keeps more of the moved last frame, which is sharp where the residual
    # is the network's hedge between places a small moving part could be (docs/results.md measures it).
    warp_residual: float = 1.0
    # With `flow.prediction: warp`: read every generated frame once from the last known frame (the context,
    # an observed chunk) through the flows composed since, instead of warping the last generated frame
    # again (its detail resampled once, not once a frame; what leaves the view and comes back is read back
    # while the composed flow holds together). Where it tears, the rollout starts again from its last
    # frame. The residuals are carried alongside.
    warp_anchor: bool = False

    @model_validator(mode="after")
    def _check(self) -> SamplerConfig:
        if self.num_steps < 1:
            raise ValueError(f"num_steps={self.num_steps} must be at least 1")
        if not 0.0 <= self.warp_residual <= 1.0:
            raise ValueError(f"warp_residual={self.warp_residual} must lie in [0, 1]")
        return self


class AstraConfig(_Config):
    """Everything needed to rebuild a world model; stored inside every checkpoint."""

    dit: DiTConfig = DIT_PRESETS["tiny"]
    action: ActionConfig = ActionConfig()
    flow: FlowConfig = FlowConfig()
    history: HistoryConfig = HistoryConfig()
    guidance: GuidanceConfig = GuidanceConfig()
    sampler: SamplerConfig = SamplerConfig()

    @model_validator(mode="after")
    def _check_sampler(self) -> AstraConfig:
        if self.sampler.warp_residual != 1.0 and self.flow.prediction != "warp":
            raise ValueError(
                f"sampler.warp_residual={self.sampler.warp_residual}: only flow.prediction 'warp' has a residual "
                f"to weigh (here {self.flow.prediction!r}); leave it at 1"
            )
        if self.sampler.warp_anchor and (self.flow.prediction != "warp" or self.flow.warp_padding != "border"):
            raise ValueError(
                f"sampler.warp_anchor: reads frames through a warp prediction's flows with the border repeated "
                f"(here prediction {self.flow.prediction!r}, warp_padding {self.flow.warp_padding!r}); leave it false"
            )
        return self

    @model_validator(mode="after")
    def _check_channels(self) -> AstraConfig:
        c = self.latent_channels
        if c < 1:
            raise ValueError(
                f"dit.out_dim={self.dit.out_dim}: prediction 'warp' outputs the latent channels "
                f"+ {self.flow.head_channels} flow channels"
            )
        if c % self.flow.warp_unshuffle**2:
            raise ValueError(f"flow.warp_unshuffle={self.flow.warp_unshuffle}: {c} latent channels are no p·p stack")
        want = 2 * c if self.history.last_frame_channels else c
        if self.dit.in_dim != want:
            why = "history.last_frame_channels adds" if self.history.last_frame_channels else "without"
            raise ValueError(
                f"dit.in_dim={self.dit.in_dim} must be {want}: {why} the last frame's {c} latent "
                f"channels beside the {c} of the noisy chunk"
                + (
                    f" (dit.out_dim − {self.flow.head_channels} with prediction 'warp')"
                    if self.flow.prediction == "warp"
                    else ""
                )
            )
        return self

    @property
    def latent_channels(self) -> int:
        """Channels of the latents the model generates: the DiT's out_dim less the flow channels of a
        `warp` prediction (`FlowConfig.head_channels`)."""
        return self.dit.out_dim - self.flow.head_channels

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> AstraConfig:
        data = dict(data)
        dit = data.get("dit")
        if isinstance(dit, dict) and "preset" in dit:
            dit = dict(dit)
            data["dit"] = dit_preset(dit.pop("preset"), **dit)
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(f"{source}: {_describe(err)}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> AstraConfig:
        return cls.from_dict(read_yaml_mapping(path), source=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last one, so a
    second `steps:` or `model:` block would silently replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be given again here
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: the base loader names it
                break
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, but a key given twice in one mapping is an error."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; errors name the file."""
    path = Path(path)
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.MarkedYAMLError as err:  # one line: what is wrong, and where
        mark = err.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: cannot read config: {err.problem or err.context}{where}") from None
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        parts.append(f"field '{loc}': {e['msg']}")
    return "; ".join(parts)


def _check_mixing(weights: dict[str, float], what: str) -> None:
    """Mixing weights: each non-negative, at least one positive."""
    bad = {k: v for k, v in weights.items() if not v >= 0}
    if bad:
        raise ValueError(f"weights: {bad} must be non-negative (a world's share of {what})")
    if weights and not any(v > 0 for v in weights.values()):
        raise ValueError("weights: at least one embodiment needs a positive weight")


class DataPhase(_Config):
    """A stretch of training steps with a mixing of its own (`DataConfig.phases`): `weights` replaces
    `data.weights` for `steps` steps, and `history_chunks` (if set) caps the history chunks per clip."""

    steps: int = Field(ge=1)
    weights: dict[str, float]
    history_chunks: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> DataPhase:
        if not self.weights:
            raise ValueError("weights: a phase needs at least one embodiment with a positive weight")
        _check_mixing(self.weights, "the phase's clips")
        return self


class DataConfig(_Config):
    """Where training clips come from: toy worlds rendered on the fly, or HDF5 latent-cache shards."""

    source: Literal["worlds", "cache"] = "worlds"
    weights: dict[str, float] = {"free_camera": 1.0, "car": 1.0, "tabletop_arm": 1.0, "keyboard_game": 1.0}
    cache: tuple[str, ...] = ()  # shard files or globs, for source "cache"
    episodes_per_world: int = Field(32, ge=1)
    held_out_per_world: int = Field(4, ge=1)
    episode_frames: int = Field(33, ge=2)
    history_chunks: int = Field(2, ge=0)  # history chunks per training clip besides the context frames
    # Each step keeps 0..history_chunks of them. When it keeps fewer, the chance that the clip is cut from
    # its start (history right after the context, as in a rollout's first chunks) rather than its end
    # (the context, a gap, then the last chunks, as later in a rollout).
    opening_prob: float = Field(0.0, ge=0.0, le=1.0)
    clip_stride: int = Field(2, ge=1)
    # Toy worlds: each training episode also yields clips of every k-th frame for each k here besides 1,
    # with the actions aligned over k frames, i.e. the same world under k-times faster motion. Larger
    # motions per frame make the actions matter more than the frames' fine detail. Held-out clips keep 1.
    time_strides: tuple[int, ...] = (1,)
    tokenizer: str = "pixel"  # "pixel" or a tokenizer checkpoint
    pixel_patch: int = Field(4, ge=1)
    # A curriculum: the first steps of a run, phase after phase, draw their clips with each phase's own
    # weights (and at most its history_chunks); data.weights holds for the steps after the last phase.
    # Every embodiment a phase names must be in data.weights: pools and normalisers come from there.
    phases: tuple[DataPhase, ...] = ()
    # the fields that only rendering toy worlds reads; a cache config leaves them at their defaults
    WORLD_FIELDS: ClassVar[tuple[str, ...]] = (
        "episodes_per_world",
        "held_out_per_world",
        "episode_frames",
        "time_strides",
    )

    @model_validator(mode="after")
    def _check_weights(self) -> DataConfig:
        _check_mixing(self.weights, "the training clips")
        return self

    @model_validator(mode="after")
    def _check_phases(self) -> DataConfig:
        for i, phase in enumerate(self.phases):
            unknown = sorted(set(phase.weights) - set(self.weights))
            if unknown:
                raise ValueError(
                    f"phases[{i}].weights: {unknown} not in data.weights {sorted(self.weights)} "
                    "(a phase draws from the embodiments of data.weights; give them weight 0 there to leave them out)"
                )
            if phase.history_chunks is not None and phase.history_chunks > self.history_chunks:
                raise ValueError(
                    f"phases[{i}].history_chunks={phase.history_chunks} exceeds data.history_chunks="
                    f"{self.history_chunks} (the clips are cut for the latter)"
                )
        return self

    @model_validator(mode="after")
    def _check_strides(self) -> DataConfig:
        if not self.time_strides or any(k < 1 for k in self.time_strides):
            raise ValueError(f"time_strides={list(self.time_strides)} must list positive frame strides")
        return self

    @model_validator(mode="after")
    def _check_world_fields(self) -> DataConfig:
        """The toy worlds' fields (`WORLD_FIELDS`) mean nothing to a cache, whose shards hold encoded
        episodes and whose held-out episodes `split_episodes` picks: a value other than the default is a
        mistake. (Compared with the default, not by whether it was set: a dumped config sets every field.)"""
        if self.source == "worlds":
            return self
        for name in self.WORLD_FIELDS:
            value = getattr(self, name)
            if value != DataConfig.model_fields[name].default:
                shown = list(value) if isinstance(value, tuple) else value
                raise ValueError(
                    f"{name}={shown} applies to source 'worlds' only (a cache's episodes are the shards' own, "
                    "encoded at their frame rate, and its held-out episodes the first tenth of each embodiment's); "
                    "remove it"
                )
        return self


class OptimConfig(_Config):
    lr: float = Field(3e-4, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = Field(100, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    grad_clip: float = Field(1.0, gt=0.0)
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_betas(self) -> OptimConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas={list(self.betas)} must lie in [0, 1)")
        return self


class TrainConfig(_Config):
    """A training run: `astra train CONFIG.yaml`."""

    model: AstraConfig = AstraConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    # "scratch": fresh weights; "adapter": a pretrained backbone frozen, the action adapter trained;
    # "finetune": every weight of an Astra checkpoint of this same architecture, all of them trained
    mode: Literal["scratch", "adapter", "finetune"] = "scratch"
    # adapter: an Astra checkpoint or a Wan2.1 state dict; finetune: an Astra checkpoint
    init_checkpoint: str | None = None
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(8, ge=1)
    seed: int = Field(0, ge=0)
    precision: Literal["fp32", "bf16"] = "fp32"
    # "auto": a CUDA device when there is one (under torchrun, the rank's own: LOCAL_RANK), else the CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch.compile (inductor) the DiT of the trained network: faster steps after a one-off compile of
    # each history layout (about 30 s each on a 2-core CPU; bench/bench_train.py measures both)
    compile: bool = False
    parallel: Literal["ddp", "fsdp"] = "ddp"  # under torchrun; "fsdp" shards every DiT block (FSDP2)
    activation_checkpointing: bool = False
    eval_every: int = Field(250, ge=0)  # 0: off
    checkpoint_every: int = Field(250, ge=0)  # 0: only at the end and on SIGINT/SIGTERM
    log_every: int = Field(10, ge=1)
    out_dir: str = "runs/toy"
    tensorboard: bool = False

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.mode == "adapter" and not self.init_checkpoint:
            raise ValueError("mode 'adapter' needs init_checkpoint (a pretrained backbone)")
        if self.mode == "finetune" and not self.init_checkpoint:
            raise ValueError("mode 'finetune' needs init_checkpoint (the Astra checkpoint it starts from)")
        if self.mode == "scratch" and self.init_checkpoint:
            raise ValueError(
                f"init_checkpoint={self.init_checkpoint!r} is read only in modes 'adapter' and 'finetune'; set "
                "mode: finetune to train all its weights further, mode: adapter to train an action adapter on "
                "its frozen backbone, or remove it to train from scratch"
            )
        if self.data.source == "worlds" and self.data.cache:
            raise ValueError("data.cache is read only with data.source: cache; set it, or remove data.cache")
        unshuffle = self.model.flow.warp_unshuffle
        if self.model.flow.prediction == "warp" and unshuffle != 1:
            if self.data.tokenizer != "pixel":
                raise ValueError(
                    f"model.flow.warp_unshuffle={unshuffle} unstacks pixel patches, but data.tokenizer is "
                    f"{self.data.tokenizer!r}: a trained tokenizer's latents are warped as they are, set 1"
                )
            if unshuffle != self.data.pixel_patch:
                raise ValueError(
                    f"model.flow.warp_unshuffle={unshuffle} must be data.pixel_patch={self.data.pixel_patch} (the "
                    "patches are unstacked into the pixels they came from), or 1"
                )
        guidance = self.model.guidance
        if guidance.action_dropout == 0.0 and guidance.scale != 1.0:
            raise ValueError(
                f"model.guidance.scale={guidance.scale} samples with action-free guidance, which extrapolates from "
                "the action-free prediction that action_dropout > 0 trains; with action_dropout 0 set scale: 1.0"
            )
        phased = sum(p.steps for p in self.data.phases)
        if phased >= self.steps:
            raise ValueError(
                f"data.phases cover {phased} steps of a {self.steps}-step run: data.weights would never be used; "
                "shorten the phases or raise steps"
            )
        return self

    def phase_at(self, step: int) -> tuple[dict[str, float], int]:
        """(mixing weights, history chunks at most) of training step `step` (0-based), from
        `data.phases`, then `data.weights` and `data.history_chunks`."""
        end = 0
        for phase in self.data.phases:
            end += phase.steps
            if step < end:
                chunks = self.data.history_chunks if phase.history_chunks is None else phase.history_chunks
                return dict(phase.weights), chunks
        return dict(self.data.weights), self.data.history_chunks

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """A training config from the mapping a YAML file holds (`model.dit` may name a `preset`);
        errors name `source` and the field."""
        if not data:
            raise ConfigError(f"{source}: the training config is empty")
        model = data.get("model")
        if isinstance(model, dict):
            data = {**data, "model": AstraConfig.from_dict(model, source=f"{source} (model)")}
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(f"{source}: {_describe(err)}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """`from_dict` on a YAML file's top-level mapping."""
        return cls.from_dict(read_yaml_mapping(path), source=str(path))
