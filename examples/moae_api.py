"""Compose a Mixture of Action Experts from registered modalities and swap routers.

Run: python examples/moae_api.py
"""

import torch

from astra_core.model.moae import FixedRouter, MoAE, SharedRouter, SoftRouter, TopKRouter
from astra_core.plugins import get_registry


def main() -> None:
    torch.manual_seed(0)
    print("modalities:", ", ".join(get_registry().modalities))
    print("routers:   ", ", ".join(get_registry().routers))

    # a batch where sample 0 is a car (ego pose + the camera on it) and sample 1 a game (keys)
    actions = {
        "vehicle_pose": torch.randn(2, 4, 6),
        "camera_se3": torch.randn(2, 4, 9),
        "discrete_cmd": torch.rand(2, 4, 12),
    }
    masks = {
        "vehicle_pose": torch.tensor([[0, 1, 1, 1], [0, 0, 0, 0.0]]),
        "camera_se3": torch.tensor([[0, 1, 1, 1], [0, 0, 0, 0.0]]),
        "discrete_cmd": torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1.0]]),
    }
    routers = {
        "topk": TopKRouter(k=2),
        "soft": SoftRouter(),
        "fixed": FixedRouter({"vehicle_pose": 0, "camera_se3": 1, "discrete_cmd": 2}),
        "shared": SharedRouter(),
    }
    for name, router in routers.items():
        moae = MoAE(modalities=list(actions), router=router, num_experts=4, token_dim=32, out_dim=64)
        out = moae(actions, masks)
        usage = {m: [round(u, 2) for u in share] for m, share in out.stats["usage"].items()}
        print(f"{name:6s} features {tuple(out.features.shape)} balance {out.stats['balance_loss']:.3f} usage {usage}")


if __name__ == "__main__":
    main()
