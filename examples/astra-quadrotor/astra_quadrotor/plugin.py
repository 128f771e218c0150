"""The quadrotor plugin: a modality, its reader and its embodiment, registered through astra's hooks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn

from astra_core import hookimpl
from astra_core.data import Episode
from astra_core.errors import ReaderError, ShapeError
from astra_core.modality import AlignedActions, Embodiment, Modality, latent_frame_indices

COLUMNS = ("t", "p", "q", "r", "thrust")


class QuadrotorRates(Modality):
    name = "quadrotor_rates"
    action_dim = 4
    raw_format = "per frame [T, 4]: body rates p, q, r (rad/s), collective thrust in [0, 1]"
    vector_format = "mean body rates (3) and mean thrust (1) over the frames leading into the latent frame"
    # generous: a racing quadrotor turns at up to ~30 rad/s; degrees/s or thrust in newtons fail at once
    bounds = {"rates": (-50.0, 50.0), "thrust": (0.0, 1.0)}

    def align(self, raw, temporal_factor: int) -> AlignedActions:
        a = np.asarray(raw, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 4:
            raise ShapeError(f"{self.name}: expected [T, 4], got {a.shape}")
        self.check_values(a[:, :3], "rates")
        self.check_values(a[:, 3], "thrust")
        idx = latent_frame_indices(len(a), temporal_factor)
        vectors = [a[s + 1 : e + 1].mean(0) for s, e in zip(idx[:-1], idx[1:])]
        return self._aligned(np.array(vectors).reshape(-1, 4))

    def encoder(self, token_dim: int) -> nn.Module:
        return RateEncoder(token_dim)


class RateEncoder(nn.Module):
    """Rates and thrust get separate projections (thrust acts along the body z axis only)."""

    def __init__(self, token_dim: int):
        super().__init__()
        self.rates = nn.Linear(3, token_dim)
        self.thrust = nn.Linear(2, token_dim)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(token_dim, token_dim))

    def forward(self, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(actions.dtype)[..., None]
        return self.out(self.rates(actions[..., :3] * m) + self.thrust(torch.cat([actions[..., 3:] * m, m], -1)))


class QuadrotorCSVReader:
    """Reads flight logs: a CSV file with the header t,p,q,r,thrust, one row per video frame."""

    name = "quadrotor_csv"
    modalities = ("quadrotor_rates",)

    def read(self, path: str | Path) -> Episode:
        path = Path(path)
        try:
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError as err:
            raise ReaderError(f"{path}: cannot read flight log ({err})") from None
        if not rows or tuple(rows[0].keys()) != COLUMNS:
            raise ReaderError(f"{path}: expected the header {','.join(COLUMNS)}")
        try:
            table = np.array([[float(row[c]) for c in COLUMNS] for row in rows])
        except (TypeError, ValueError) as err:
            raise ReaderError(f"{path}: a value is not a number ({err})") from None
        t = table[:, 0]
        fps = float(1.0 / np.median(np.diff(t))) if len(t) > 1 else 10.0
        return Episode("quadrotor", {"quadrotor_rates": table[:, 1:]}, fps=fps, source=str(path))


@hookimpl
def astra_register_modalities(register):
    register(QuadrotorRates())


@hookimpl
def astra_register_readers(register):
    register(QuadrotorCSVReader())


@hookimpl
def astra_register_embodiments(register):
    register(Embodiment("quadrotor", ("quadrotor_rates",), reader="quadrotor_csv", description="a quadrotor drone"))
