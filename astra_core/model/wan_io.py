"""Wan2.1 weights in and out: the original key layout and diffusers' `WanTransformer3DModel` layout.

`AstraDiT` names its backbone parameters exactly as the original Wan2.1 checkpoint does, so the
original layout needs no renaming; diffusers' layout is renamed key by key with the table below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from astra_core.errors import WeightLoadError
from astra_core.model.dit import AstraDiT

# (diffusers pattern, Wan original replacement); applied to a key in order, first match wins.
_DIFFUSERS_TO_WAN: list[tuple[str, str]] = [
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^blocks\.(\d+)\.attn1\.to_out\.0\.", r"blocks.\1.self_attn.o."),
    (r"^blocks\.(\d+)\.attn1\.to_([qkv])\.", r"blocks.\1.self_attn.\2."),
    (r"^blocks\.(\d+)\.attn1\.norm_([qk])\.", r"blocks.\1.self_attn.norm_\2."),
    (r"^blocks\.(\d+)\.attn2\.to_out\.0\.", r"blocks.\1.cross_attn.o."),
    (r"^blocks\.(\d+)\.attn2\.to_([qkv])\.", r"blocks.\1.cross_attn.\2."),
    (r"^blocks\.(\d+)\.attn2\.norm_([qk])\.", r"blocks.\1.cross_attn.norm_\2."),
    (r"^blocks\.(\d+)\.norm2\.", r"blocks.\1.norm3."),  # diffusers' norm2 is Wan's cross-attention norm3
    (r"^blocks\.(\d+)\.ffn\.net\.0\.proj\.", r"blocks.\1.ffn.0."),
    (r"^blocks\.(\d+)\.ffn\.net\.2\.", r"blocks.\1.ffn.2."),
    (r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation"),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
]

_WAN_TO_DIFFUSERS: list[tuple[str, str]] = [
    (r"^time_embedding\.0\.", "condition_embedder.time_embedder.linear_1."),
    (r"^time_embedding\.2\.", "condition_embedder.time_embedder.linear_2."),
    (r"^time_projection\.1\.", "condition_embedder.time_proj."),
    (r"^text_embedding\.0\.", "condition_embedder.text_embedder.linear_1."),
    (r"^text_embedding\.2\.", "condition_embedder.text_embedder.linear_2."),
    (r"^blocks\.(\d+)\.self_attn\.o\.", r"blocks.\1.attn1.to_out.0."),
    (r"^blocks\.(\d+)\.self_attn\.([qkv])\.", r"blocks.\1.attn1.to_\2."),
    (r"^blocks\.(\d+)\.self_attn\.norm_([qk])\.", r"blocks.\1.attn1.norm_\2."),
    (r"^blocks\.(\d+)\.cross_attn\.o\.", r"blocks.\1.attn2.to_out.0."),
    (r"^blocks\.(\d+)\.cross_attn\.([qkv])\.", r"blocks.\1.attn2.to_\2."),
    (r"^blocks\.(\d+)\.cross_attn\.norm_([qk])\.", r"blocks.\1.attn2.norm_\2."),
    (r"^blocks\.(\d+)\.norm3\.", r"blocks.\1.norm2."),
    (r"^blocks\.(\d+)\.ffn\.0\.", r"blocks.\1.ffn.net.0.proj."),
    (r"^blocks\.(\d+)\.ffn\.2\.", r"blocks.\1.ffn.net.2."),
    (r"^blocks\.(\d+)\.modulation$", r"blocks.\1.scale_shift_table"),
    (r"^head\.modulation$", "scale_shift_table"),
    (r"^head\.head\.", "proj_out."),
]


def _rename(key: str, table: list[tuple[str, str]]) -> str:
    for pattern, replacement in table:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return key


def detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    """'diffusers' or 'wan' (the original layout), from the key names."""
    diffusers_marks = ("condition_embedder.", "scale_shift_table", "proj_out.")
    if any(k.startswith(diffusers_marks) or ".attn1." in k for k in state_dict):
        return "diffusers"
    return "wan"


def to_wan_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported layout -> the original Wan2.1 key names (tensors are not copied)."""
    prefixes = ("model.diffusion_model.", "diffusion_model.", "model.")
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        cleaned[key] = value
    if detect_layout(cleaned) == "diffusers":
        return {_rename(k, _DIFFUSERS_TO_WAN): v for k, v in cleaned.items()}
    return cleaned


@dataclass
class LoadReport:
    """What `load_wan_state_dict` did: backbone keys loaded and Astra's own keys freshly initialised."""

    layout: str
    loaded: list[str] = field(default_factory=list)
    newly_initialised: list[str] = field(default_factory=list)


def load_wan_state_dict(model: AstraDiT, state_dict: dict[str, torch.Tensor], strict: bool = True) -> LoadReport:
    """Load a Wan2.1 backbone (original or diffusers layout) into `model`.

    Every backbone key must be present with its shape; missing, unexpected and mis-shaped keys are
    reported together in one `WeightLoadError`. Astra's additions (projectors, the action modulation) keep
    their initialisation (identity, zero) and are listed in `LoadReport.newly_initialised`.
    """
    layout = detect_layout(state_dict)
    incoming = to_wan_layout(state_dict)
    expected = {k: tuple(v.shape) for k, v in model.backbone_state_dict().items()}
    missing = sorted(set(expected) - set(incoming))
    unexpected = sorted(set(incoming) - set(expected))
    mis_shaped = sorted(
        f"{k}: checkpoint {tuple(incoming[k].shape)} vs model {expected[k]}"
        for k in set(expected) & set(incoming)
        if tuple(incoming[k].shape) != expected[k]
    )
    if strict and (missing or unexpected or mis_shaped):
        lines = [f"state dict ({layout} layout) does not match the AstraDiT backbone:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
            if items:
                lines.append(
                    f"  {title} ({len(items)}): " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else "")
                )
        raise WeightLoadError("\n".join(lines))
    usable = {k: v for k, v in incoming.items() if k in expected and tuple(v.shape) == expected[k]}
    on_meta = any(p.is_meta for p in model.parameters())
    model.load_state_dict(usable, strict=False, assign=on_meta)
    additions = sorted(set(model.state_dict()) - set(expected))
    return LoadReport(layout=layout, loaded=sorted(usable), newly_initialised=additions)


def export_wan_state_dict(model: AstraDiT, layout: str = "wan") -> dict[str, torch.Tensor]:
    """The backbone's weights in the original Wan2.1 layout ('wan') or diffusers' ('diffusers')."""
    backbone = model.backbone_state_dict()
    if layout == "wan":
        return backbone
    if layout == "diffusers":
        return {_rename(k, _WAN_TO_DIFFUSERS): v for k, v in backbone.items()}
    raise ValueError(f"layout must be 'wan' or 'diffusers', got {layout!r}")


def diffusers_config(model: AstraDiT) -> dict:
    """Keyword arguments of a diffusers `WanTransformer3DModel` with this backbone's shape."""
    cfg = model.config
    return dict(
        patch_size=cfg.patch_size,
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim,
        out_channels=cfg.out_dim,
        text_dim=cfg.text_dim,
        freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers,
        cross_attn_norm=cfg.cross_attn_norm,
        eps=cfg.eps,
    )
