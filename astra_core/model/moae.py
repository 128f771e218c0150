"""Mixture of Action Experts (MoAE), Astra §3, with routers that actually learn.

Each modality's encoder (from its plugin) turns normalised actions into unified tokens [.., d_u]; a
router sends every valid token to k of K routed experts; the experts' weighted outputs, summed over
the modalities a sample carries, form the action feature [B, F, out_dim] that the DiT adds before
self-attention. Routed-expert outputs are zero-initialised, so adding MoAE to a trained backbone
leaves its output unchanged.

The router contract (`Router`; `check_router` tests a router against it):
- `router.setup(token_dim, num_experts, modality_names)` once, before the first call: build the
  parameters there (the modality names are in a fixed order; id i in a call is `modality_names[i]`).
- `router(tokens [N, token_dim], modality_ids [N] long) -> (weights, expert_ids, aux_loss, stats)`, for
  the N valid action tokens of a batch (N may be 0):
  - `weights` [N, k] floating, `expert_ids` [N, k] long in [0, num_experts): each token goes to k
    experts (the same k for every token; pad with weight 0 to a common k), and the output is
    Σ_j weights[n, j]·expert[expert_ids[n, j]](token n). Weights are used as given: normalise them
    (rows summing to 1) if the router means a convex mix.
  - `aux_loss`: a 0-d tensor, the router's own loss (load balancing), added to the training loss times
    `action.aux_loss_weight`; `tokens.new_zeros(())` when it has none.
  - `stats`: a dict with at least "entropy" (a float: the mean entropy of the routing distribution,
    0 for a deterministic router), logged during training; more float entries are kept beside it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.layers import Mlp
from torch import nn

from astra_core.errors import ConfigError, ShapeError
from astra_core.modality import Modality, check_finite
from astra_core.plugins.hookspecs import hookimpl

# --------------------------------------------------------------------------------------------
# Routers
# --------------------------------------------------------------------------------------------


class RouterContractError(ShapeError):
    """A router's output breaks the router contract (see the module docstring)."""


REQUIRED_STATS = ("entropy",)


def check_router_output(router: nn.Module, output, num_tokens: int, num_experts: int, values: bool = True) -> None:
    """One clear `RouterContractError` naming the router and the piece of its output at fault. The
    expert ids' range is read only with `values` (it waits for the device, so the MoAE reads it on its
    first call only; types and shapes cost nothing and are checked every call)."""
    name = type(router).__name__
    if not isinstance(output, tuple) or len(output) != 4:
        got = f"a {len(output)}-tuple" if isinstance(output, tuple) else type(output).__name__
        raise RouterContractError(f"{name}: forward must return (weights, expert_ids, aux_loss, stats), got {got}")
    weights, ids, aux, stats = output
    if not isinstance(weights, torch.Tensor) or not weights.is_floating_point() or weights.ndim != 2:
        raise RouterContractError(f"{name}: weights must be a floating tensor [N, k], got {_describe(weights)}")
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.long or tuple(ids.shape) != tuple(weights.shape):
        raise RouterContractError(
            f"{name}: expert_ids must be a long tensor of the weights' shape {tuple(weights.shape)}, "
            f"got {_describe(ids)}"
        )
    if len(weights) != num_tokens:
        raise RouterContractError(f"{name}: weights have {len(weights)} rows for {num_tokens} tokens")
    if values and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_experts):
        raise RouterContractError(
            f"{name}: expert_ids range over [{int(ids.min())}, {int(ids.max())}], outside [0, {num_experts - 1}]"
        )
    if not isinstance(aux, torch.Tensor) or aux.ndim != 0:
        raise RouterContractError(
            f"{name}: aux_loss must be a 0-d tensor (tokens.new_zeros(()) if none), got {_describe(aux)}"
        )
    if not isinstance(stats, Mapping):
        raise RouterContractError(f"{name}: stats must be a dict, got {type(stats).__name__}")
    missing = [key for key in REQUIRED_STATS if key not in stats]
    if missing:
        raise RouterContractError(f"{name}: stats lack {missing} (a float each; 0.0 for a deterministic router)")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {tuple(value.shape)}"
    return type(value).__name__


def check_router(
    router: nn.Module, token_dim: int = 8, num_experts: int = 4, modality_names: Sequence[str] = ("a", "b")
) -> None:
    """Set `router` up and call it on a small batch (and on an empty one); raise `RouterContractError`
    naming what breaks the contract. A plugin's tests can call this on their router."""
    router.setup(token_dim, num_experts, modality_names)
    generator = torch.Generator().manual_seed(0)
    for n in (6, 0):
        tokens = torch.randn(n, token_dim, generator=generator)
        ids = torch.randint(0, len(modality_names), (n,), generator=generator)
        check_router_output(router, router(tokens, ids), n, num_experts)


class Router(nn.Module):
    """Base class of the router contract (module docstring): build parameters in `setup`, implement
    `forward(tokens, modality_ids) -> (weights, expert_ids, aux_loss, stats)`.

    A router is described by a spec, `{"name": <registered name>, "options": {...}}` (`router_spec`),
    which is what configs and checkpoints store. `options()` gives the keyword arguments it was built
    with: by default, the attribute of the same name for every argument of `__init__` (so store each
    argument as an attribute of its own name, or override `options`)."""

    def setup(self, token_dim: int, num_experts: int, modality_names: Sequence[str]) -> None:
        self.token_dim, self.num_experts, self.modality_names = token_dim, num_experts, list(modality_names)

    def options(self) -> dict[str, Any]:
        params = inspect.signature(type(self).__init__).parameters.values()
        names = [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        missing = [n for n in names if not hasattr(self, n)]
        if missing:
            raise RouterContractError(
                f"{type(self).__name__}: cannot describe itself: no attribute for the __init__ argument(s) "
                f"{missing}; store them under the same names or override options()"
            )
        return {n: getattr(self, n) for n in names}

    @staticmethod
    def _entropy(probs: torch.Tensor) -> torch.Tensor:
        return -(probs * probs.clamp_min(1e-9).log()).sum(-1).mean() if len(probs) else probs.new_zeros(())


class TopKRouter(Router):
    """Learnable top-k routing with the Switch-Transformer load-balancing loss (Fedus et al. 2021):
    aux = K · Σ_e f_e · P_e, f_e the share of assignments to expert e, P_e its mean probability."""

    def __init__(self, k: int = 2):
        super().__init__()
        self.k = k

    def setup(self, token_dim, num_experts, modality_names):
        super().setup(token_dim, num_experts, modality_names)
        if not 1 <= self.k <= num_experts:
            raise ShapeError(f"TopKRouter: k={self.k} must lie in [1, num_experts={num_experts}]")
        self.gate = nn.Linear(token_dim, num_experts)
        self.modality_bias = nn.Embedding(len(self.modality_names), num_experts)
        nn.init.normal_(self.gate.weight, std=0.02)
        nn.init.zeros_(self.gate.bias)
        nn.init.zeros_(self.modality_bias.weight)

    def forward(self, tokens, modality_ids):
        probs = torch.softmax(self.gate(tokens) + self.modality_bias(modality_ids), dim=-1)
        top, ids = probs.topk(self.k, dim=-1)
        weights = top / top.sum(-1, keepdim=True)
        if len(tokens):
            share = (
                torch.zeros(self.num_experts, device=tokens.device).index_add_(
                    0, ids.flatten(), torch.ones(ids.numel(), device=tokens.device)
                )
                / ids.numel()
            )
            aux = self.num_experts * (share * probs.mean(0)).sum()
        else:
            aux = tokens.new_zeros(())
        return weights, ids, aux, {"entropy": float(self._entropy(probs.detach()))}


class SoftRouter(Router):
    """Dense softmax routing: every token goes to every expert, weighted."""

    def setup(self, token_dim, num_experts, modality_names):
        super().setup(token_dim, num_experts, modality_names)
        self.gate = nn.Linear(token_dim, num_experts)
        nn.init.normal_(self.gate.weight, std=0.02)
        nn.init.zeros_(self.gate.bias)

    def forward(self, tokens, modality_ids):
        probs = torch.softmax(self.gate(tokens), dim=-1)
        ids = torch.arange(self.num_experts, device=tokens.device).expand(len(tokens), -1)
        return probs, ids, tokens.new_zeros(()), {"entropy": float(self._entropy(probs.detach()))}


class FixedRouter(Router):
    """A fixed modality -> expert table with weight 1 (what the authors' release does); by default
    modality i goes to expert i mod K."""

    def __init__(self, table: Mapping[str, int] | None = None):
        super().__init__()
        self.table = dict(table or {})

    def setup(self, token_dim, num_experts, modality_names):
        super().setup(token_dim, num_experts, modality_names)
        unknown = set(self.table) - set(modality_names)
        if unknown:
            raise ShapeError(f"FixedRouter: table names unknown modalities {sorted(unknown)}")
        experts = [self.table.get(name, i % num_experts) for i, name in enumerate(modality_names)]
        if any(not 0 <= e < num_experts for e in experts):
            raise ShapeError(f"FixedRouter: experts {experts} out of range for {num_experts} experts")
        self.register_buffer("expert_of", torch.tensor(experts, dtype=torch.long), persistent=False)

    def forward(self, tokens, modality_ids):
        ids = self.expert_of.to(tokens.device)[modality_ids][:, None]
        return tokens.new_ones(len(tokens), 1), ids, tokens.new_zeros(()), {"entropy": 0.0}


class SharedRouter(Router):
    """One shared routed expert for every token (no routing at all)."""

    def forward(self, tokens, modality_ids):
        ids = torch.zeros(len(tokens), 1, dtype=torch.long, device=tokens.device)
        return tokens.new_ones(len(tokens), 1), ids, tokens.new_zeros(()), {"entropy": 0.0}


# --------------------------------------------------------------------------------------------
# Specs and combinators
# --------------------------------------------------------------------------------------------

RouterLike = Router | Mapping[str, Any] | str


def _registered_name(router: Router) -> str:
    from astra_core.plugins import get_registry

    for name, factory in get_registry().routers.items():
        if factory is type(router):
            return name
    raise RouterContractError(
        f"{type(router).__name__} is not a registered router, so a config or checkpoint cannot name it: "
        "register it from a plugin (astra_register_routers) or with register_plugin"
    )


def router_spec(router: RouterLike) -> dict[str, Any]:
    """The serialisable description of a router: {"name": ..., "options": {...}}, nested for
    combinators. Accepts a router object, a spec (checked and normalised) or a registered name."""
    if isinstance(router, str):
        return {"name": router, "options": {}}
    if isinstance(router, Mapping):
        unknown = set(router) - {"name", "options"}
        if "name" not in router or unknown or not isinstance(router.get("options", {}), Mapping):
            raise ConfigError(f"router spec {dict(router)}: expected {{'name': ..., 'options': {{...}}}}")
        return {"name": str(router["name"]), "options": _spec_values(dict(router.get("options", {})))}
    if isinstance(router, Router):
        return {"name": _registered_name(router), "options": _spec_values(router.options())}
    raise ConfigError(f"a router must be a Router, a spec dict or a registered name, not {type(router).__name__}")


def _spec_values(value: Any) -> Any:
    """Options with every router inside (a combinator's) replaced by its spec."""
    if isinstance(value, Router):
        return router_spec(value)
    if isinstance(value, Mapping):
        return {k: _spec_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_spec_values(v) for v in value]
    return value


def build_router(spec: RouterLike) -> Router:
    """A router from its spec (or a registered name); a Router object is returned as it is."""
    from astra_core.plugins import get_registry

    if isinstance(spec, Router):
        return spec
    spec = router_spec(spec)
    factory = get_registry().get("routers", spec["name"])
    try:
        return factory(**spec["options"])
    except TypeError as err:
        raise ConfigError(
            f"router options {spec['options']} do not fit router {spec['name']!r}, which takes "
            f"{router_option_names(factory)}: {err}"
        ) from None


def router_option_names(factory) -> str:
    """The keyword options a router class accepts, with their defaults, for error messages."""
    try:
        params = [
            p
            for p in inspect.signature(factory).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return "the options its documentation names"
    if not params:
        return "no options"
    shown = [p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}" for p in params]
    return "{" + ", ".join(shown) + "}"


def _pad(weights: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Widen [N, k'] routing to [N, k] with weight-0 slots on expert 0 (they add nothing)."""
    extra = k - weights.shape[1]
    if extra <= 0:
        return weights, ids
    return (
        torch.cat([weights, weights.new_zeros(len(weights), extra)], dim=1),
        torch.cat([ids, ids.new_zeros(len(ids), extra)], dim=1),
    )


class PerModalityRouter(Router):
    """A router chosen per modality: `PerModalityRouter({"camera_se3": FixedRouter(), "robot_ee":
    TopKRouter(k=1)}, default=SoftRouter())`. Each token goes through its modality's router (or
    `default`, a top-k router unless given; None: every modality needs its own); the outputs are padded
    to the widest k. YAML: `router: per_modality` with
    `router_options: {routers: {camera_se3: {name: fixed}}, default: {name: topk, options: {k: 1}}}`."""

    def __init__(self, routers: Mapping[str, RouterLike] | None = None, default: RouterLike | None = "topk"):
        super().__init__()
        self.routers = nn.ModuleDict({name: build_router(r) for name, r in dict(routers or {}).items()})
        self.default = build_router(default) if default is not None else None

    def setup(self, token_dim, num_experts, modality_names):
        super().setup(token_dim, num_experts, modality_names)
        unknown = sorted(set(self.routers) - set(modality_names))
        if unknown:
            raise ConfigError(f"PerModalityRouter: routers for {unknown}, which the model does not have")
        uncovered = [m for m in modality_names if m not in self.routers]
        if uncovered and self.default is None:
            raise ConfigError(f"PerModalityRouter: no router for {uncovered}; give one each or a default")
        for router in [*self.routers.values(), *([self.default] if self.default is not None else [])]:
            router.setup(token_dim, num_experts, modality_names)

    def options(self):
        return {"routers": dict(self.routers.items()), "default": self.default}

    def forward(self, tokens, modality_ids):
        parts, entropy = [], 0.0
        aux = tokens.new_zeros(())
        for index, name in enumerate(self.modality_names):
            rows = (modality_ids == index).nonzero().squeeze(1)
            if not len(rows):
                continue
            router = self.routers[name] if name in self.routers else self.default
            weights, ids, router_aux, stats = router(tokens[rows], modality_ids[rows])
            check_router_output(router, (weights, ids, router_aux, stats), len(rows), self.num_experts, values=False)
            parts.append((rows, weights, ids))
            aux = aux + router_aux
            entropy += float(stats["entropy"]) * len(rows)
        k = max((w.shape[1] for _, w, _ in parts), default=1)
        weights = tokens.new_zeros(len(tokens), k)
        ids = torch.zeros(len(tokens), k, dtype=torch.long, device=tokens.device)
        for rows, w, i in parts:
            w, i = _pad(w, i, k)
            weights[rows], ids[rows] = w.to(weights.dtype), i
        return weights, ids, aux, {"entropy": entropy / max(len(tokens), 1)}


class MixtureRouter(Router):
    """A learned gate over several routers: `MixtureRouter([FixedRouter(), TopKRouter(k=2)])`. Each
    token is routed by every one of them; a softmax gate on the token weighs the routers, and the
    token's experts are all of theirs (k = the sum of their k), each weight times its router's gate.
    The default mixes a fixed modality table with a learned top-k.
    YAML: `router: mixture` with `router_options: {routers: [{name: fixed}, {name: topk}]}`."""

    def __init__(self, routers: Sequence[RouterLike] = ("fixed", "topk")):
        super().__init__()
        if len(routers) < 1:
            raise ConfigError("MixtureRouter: give at least one router")
        self.routers = nn.ModuleList(build_router(r) for r in routers)

    def setup(self, token_dim, num_experts, modality_names):
        super().setup(token_dim, num_experts, modality_names)
        for router in self.routers:
            router.setup(token_dim, num_experts, modality_names)
        self.gate = nn.Linear(token_dim, len(self.routers))
        nn.init.zeros_(self.gate.weight)  # the routers start evenly weighed
        nn.init.zeros_(self.gate.bias)

    def options(self):
        return {"routers": list(self.routers)}

    def forward(self, tokens, modality_ids):
        gate = torch.softmax(self.gate(tokens), dim=-1)
        weights, ids = [], []
        aux = tokens.new_zeros(())
        entropy = float(self._entropy(gate.detach()))
        for r, router in enumerate(self.routers):
            w, i, router_aux, stats = router(tokens, modality_ids)
            check_router_output(router, (w, i, router_aux, stats), len(tokens), self.num_experts, values=False)
            weights.append(w * gate[:, r : r + 1])
            ids.append(i)
            aux = aux + router_aux
            entropy += float(stats["entropy"]) / len(self.routers)
        return torch.cat(weights, dim=1), torch.cat(ids, dim=1), aux, {"entropy": entropy}


@hookimpl
def astra_register_routers(register):
    register("topk", TopKRouter)
    register("soft", SoftRouter)
    register("fixed", FixedRouter)
    register("shared", SharedRouter)
    register("per_modality", PerModalityRouter)
    register("mixture", MixtureRouter)


# --------------------------------------------------------------------------------------------
# The mixture
# --------------------------------------------------------------------------------------------


@dataclass
class MoAEOutput:
    features: torch.Tensor  # [B, F, out_dim]
    aux_loss: torch.Tensor  # router's auxiliary (load-balancing) loss, unweighted
    stats: dict = field(default_factory=dict)  # usage per modality, entropy, balance loss (floats)


def _resolve_modality(modality: Modality | str) -> Modality:
    if isinstance(modality, Modality):
        return modality
    from astra_core.plugins import get_registry

    return get_registry().get("modalities", modality)


class _PerModalityActions(nn.Module):
    """What MoAE and its shared-encoder ablation share: the modalities, a normaliser for each, checks."""

    def __init__(self, modalities: Sequence[Modality | str], token_dim: int, out_dim: int | None, what: str):
        super().__init__()
        mods = [_resolve_modality(m) for m in modalities]
        if not mods:
            raise ShapeError(f"{what} needs at least one modality")
        self.modalities = {m.name: m for m in mods}
        self.names = list(self.modalities)
        self.out_dim = out_dim or token_dim
        self.normalizers = nn.ModuleDict({m.name: m.normalizer() for m in mods})

    def fit_normalizers(self, actions: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
        for name, a in actions.items():
            self.normalizers[name].fit(a, masks.get(name))

    def _check(self, actions, masks) -> tuple[int, int]:
        return check_action_dict(self.modalities, actions, masks)


class MoAE(_PerModalityActions):
    """`MoAE(modalities=[...], router=TopKRouter(k=2), num_experts=4)`: modality encoders, a router
    and K routed experts. Modalities are `Modality` objects or names of registered ones."""

    def __init__(
        self,
        modalities: Sequence[Modality | str],
        router: RouterLike | None = None,
        num_experts: int = 4,
        token_dim: int = 64,
        out_dim: int | None = None,
        expert_hidden: int = 128,
        zero_init: bool = True,
    ):
        super().__init__(modalities, token_dim, out_dim, "MoAE")
        self.encoders = nn.ModuleDict({m.name: m.encoder(token_dim) for m in self.modalities.values()})
        self.router = build_router(router) if router is not None else TopKRouter(k=min(2, num_experts))
        self.router.setup(token_dim, num_experts, self.names)
        self._router_checked = False  # the first call also checks the expert ids' range
        self.num_experts = num_experts
        self.experts = nn.ModuleList(Mlp(token_dim, expert_hidden, self.out_dim) for _ in range(num_experts))
        if zero_init:  # the experts' output layers start at zero: a new action path changes nothing yet
            for expert in self.experts:
                nn.init.zeros_(expert.fc2.weight)
                nn.init.zeros_(expert.fc2.bias)

    def forward(
        self,
        actions: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None = None,
        normalize: bool = True,
    ) -> MoAEOutput:
        """actions: {modality: [B, F, d_m]} (raw aligned vectors if `normalize`, else normalised);
        masks: {modality: [B, F]}, 0 where a frame (or a whole sample) has no such action."""
        b, f = self._check(actions, masks)
        device = next(iter(actions.values())).device
        tokens, mod_ids, where = [], [], []
        for index, name in enumerate(self.names):
            if name not in actions:
                continue
            a = actions[name].float()
            m = masks[name].float() if masks is not None and name in masks else torch.ones(b, f, device=device)
            x = self.normalizers[name](a, m) if normalize else a
            tok = self.encoders[name](x, m).reshape(b * f, -1)
            valid = (m.reshape(-1) > 0).nonzero().squeeze(1)
            tokens.append(tok[valid])
            where.append(valid)
            mod_ids.append(torch.full_like(valid, index))
        tokens, mod_ids, where = torch.cat(tokens), torch.cat(mod_ids), torch.cat(where)

        routed = self.router(tokens, mod_ids)
        check_router_output(self.router, routed, len(tokens), self.num_experts, values=not self._router_checked)
        self._router_checked = True
        weights, expert_ids, aux, router_stats = routed
        mixed = self._run_experts(tokens, weights, expert_ids)
        features = torch.zeros(b * f, self.out_dim, device=device, dtype=mixed.dtype).index_add_(0, where, mixed)
        stats = {
            **router_stats,
            "balance_loss": float(aux.detach()),
            "usage": self._usage(weights, expert_ids, mod_ids),
        }
        return MoAEOutput(features.reshape(b, f, self.out_dim), aux, stats)

    def _run_experts(self, tokens, weights, expert_ids) -> torch.Tensor:
        out = tokens.new_zeros(len(tokens), self.out_dim)
        for e, expert in enumerate(self.experts):
            rows, slots = (expert_ids == e).nonzero(as_tuple=True)
            if len(rows):
                out = out.index_add(0, rows, expert(tokens[rows]) * weights[rows, slots, None])
        return out

    @torch.no_grad()
    def _usage(self, weights, expert_ids, mod_ids) -> dict[str, list[float]]:
        """Per modality: the share of its routing weight each expert receives."""
        usage = {}
        for index, name in enumerate(self.names):
            rows = mod_ids == index
            if not bool(rows.any()):
                continue
            per_expert = torch.zeros(self.num_experts, device=weights.device)
            per_expert.index_add_(0, expert_ids[rows].flatten(), weights[rows].flatten().float())
            usage[name] = (per_expert / per_expert.sum()).tolist()
        return usage


class SharedActionEncoder(_PerModalityActions):
    """The MoAE ablation of the paper: each modality's vector is normalised on its own, zero-padded to
    the widest modality and sent through one shared encoder (no per-modality experts, no routing).
    Same call and output as `MoAE`; the output layer is zero-initialised unless `zero_init` is False."""

    def __init__(
        self,
        modalities: Sequence[Modality | str],
        token_dim: int = 64,
        out_dim: int | None = None,
        expert_hidden: int = 128,
        zero_init: bool = True,
    ):
        super().__init__(modalities, token_dim, out_dim, "SharedActionEncoder")
        self.width = max(m.action_dim for m in self.modalities.values())
        self.encoder = nn.Sequential(nn.Linear(self.width + 1, expert_hidden), nn.SiLU())
        self.head = Mlp(expert_hidden, expert_hidden, self.out_dim)
        if zero_init:
            nn.init.zeros_(self.head.fc2.weight)
            nn.init.zeros_(self.head.fc2.bias)

    def forward(self, actions, masks=None, normalize: bool = True) -> MoAEOutput:
        b, f = self._check(actions, masks)
        device = next(iter(actions.values())).device
        features = torch.zeros(b, f, self.out_dim, device=device)
        for name in self.names:
            if name not in actions:
                continue
            a = actions[name].float()
            m = masks[name].float() if masks is not None and name in masks else torch.ones(b, f, device=device)
            x = self.normalizers[name](a, m) if normalize else a
            x = torch.nn.functional.pad(x, (0, self.width - x.shape[-1]))
            features = (
                features + self.head(self.encoder(torch.cat([x * m[..., None], m[..., None]], -1))) * m[..., None]
            )
        return MoAEOutput(features, features.new_zeros(()), {})


def check_action_dict(modalities: Mapping[str, Modality], actions, masks) -> tuple[int, int]:
    """Checks {modality: [B, F, d_m]} actions (and masks [B, F]) against the known modalities -> (B, F)."""
    if not actions:
        raise ShapeError("action encoder: no actions given")
    unknown = set(actions) - set(modalities)
    if unknown:
        raise ShapeError(f"action encoder: unknown modalities {sorted(unknown)}; this model has {list(modalities)}")
    shape = None
    for name, a in actions.items():
        d = modalities[name].action_dim
        if a.ndim != 3 or a.shape[-1] != d:
            raise ShapeError(f"actions[{name!r}]: expected [B, F, {d}], got {tuple(a.shape)}")
        if shape is not None and a.shape[:2] != shape:
            raise ShapeError(f"actions[{name!r}]: batch/frames {tuple(a.shape[:2])} differ from {shape}")
        shape = a.shape[:2]
        check_finite(f"actions[{name!r}]", a, "actions")
        if masks is not None and name in masks and masks[name].shape != a.shape[:2]:
            raise ShapeError(f"masks[{name!r}]: expected {tuple(a.shape[:2])}, got {tuple(masks[name].shape)}")
    return int(shape[0]), int(shape[1])
