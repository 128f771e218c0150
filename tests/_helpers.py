"""Shared builders for the tests (imported as `_helpers`; pytest puts tests/ on sys.path)."""

import os

import torch

from astra_core.config import ActionConfig, AstraConfig, HistoryConfig, dit_preset
from astra_core.model.actions import AstraNet

torch.set_num_threads(min(2, os.cpu_count() or 1))


# A CPU-sized DiT in a training config's YAML form, for the pixel tokenizer's 48 channels.
TINY_DIT = {"preset": "tiny", "dim": 32, "ffn_dim": 64, "num_heads": 2, "num_layers": 1, "in_dim": 48, "out_dim": 48}


def make_config(
    dim: int = 64,
    layers: int = 2,
    heads: int = 4,
    channels: int = 8,
    action_dim: int = 3,
    chunk_size: int = 2,
    window: int = 4,
    **dit_overrides,
) -> AstraConfig:
    """A CPU-sized config for tests: a two-layer DiT on 8-channel latents."""
    return AstraConfig(
        dit=dit_preset(
            "tiny",
            dim=dim,
            ffn_dim=2 * dim,
            num_heads=heads,
            num_layers=layers,
            in_dim=channels,
            out_dim=channels,
            **dit_overrides,
        ),
        action=ActionConfig(action_dim=action_dim, hidden_dim=32),
        history=HistoryConfig(chunk_size=chunk_size, window=window),
    )


def make_net(seed: int = 0, live_actions: bool = True, **kw) -> AstraNet:
    """A tiny AstraNet; with `live_actions` the zero-initialised action output is randomised so that
    actions actually change the prediction."""
    torch.manual_seed(seed)
    net = AstraNet(make_config(**kw))
    if live_actions:
        torch.nn.init.normal_(net.action_encoder.net[-1].weight, std=0.2)
        torch.nn.init.normal_(net.action_encoder.net[-1].bias, std=0.2)
        if net.dit.action_modulation is not None:
            torch.nn.init.normal_(net.dit.action_modulation.weight, std=0.2)
    return net.eval()


def has_cuda() -> bool:
    return torch.cuda.is_available()


def has_compiler() -> bool:
    """torch.compile's CPU backend (inductor) builds C++; without a compiler it cannot run."""
    import shutil

    return shutil.which("g++") is not None or shutil.which("cc") is not None
