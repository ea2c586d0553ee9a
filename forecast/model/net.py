"""The network: LSTM encoder over the past, LSTM decoder over the horizon, and a quantile head that predicts
the *residual* over the seasonal-naive (same time last week) reference, so an output of zero is exactly
seasonal naive and training starts from it (the last layer is zero-initialised).

The recurrent layers step one *patch* at a time: ``patch`` consecutive steps (an hour of a sub-hourly meter)
enter as one input vector, so a day is ~24 recurrent steps whatever the interval; the quantile head still
sees every step's own decoder features (decision 0940)."""

from __future__ import annotations

import torch
from torch import nn

INITIAL_HALF_WIDTH = 0.1  # band half-width per unit of softplus output, in units of the window's mean load


class QuantileLSTM(nn.Module):
    def __init__(self, enc_features: int, dec_features: int, hidden: int, patch: int = 1) -> None:
        super().__init__()
        self.patch = patch
        self.encoder = nn.LSTM(enc_features * patch, hidden, batch_first=True)
        self.decoder = nn.LSTM(dec_features * patch, hidden, batch_first=True)
        self.hidden_layer = nn.Linear(hidden + dec_features, hidden)
        self.out = nn.Linear(hidden, 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,L,Fe), (B,H,Fd), (B,H) -> (B,H,3) quantiles P10 <= P50 <= P90 in scaled units."""
        p = self.patch
        b, length, horizon = enc.shape[0], enc.shape[1], dec.shape[1]
        if length % p or horizon % p:
            raise ValueError(f"encoder ({length}) and decoder ({horizon}) steps must be multiples of the patch {p}")
        _, state = self.encoder(enc.reshape(b, length // p, p * enc.shape[2]))
        out, _ = self.decoder(dec.reshape(b, horizon // p, p * dec.shape[2]), state)
        if p > 1:  # each step of a patch starts from its patch's decoder state
            out = out.repeat_interleave(p, dim=1)
        raw = self.out(torch.relu(self.hidden_layer(torch.cat([out, dec], dim=-1))))
        mid = reference + raw[..., 1]
        lo = mid - INITIAL_HALF_WIDTH * nn.functional.softplus(raw[..., 0])
        hi = mid + INITIAL_HALF_WIDTH * nn.functional.softplus(raw[..., 2])
        return torch.stack([lo, mid, hi], dim=-1)


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: tuple[float, ...]) -> torch.Tensor:
    q = torch.tensor(quantiles, dtype=pred.dtype)
    diff = target.unsqueeze(-1) - pred
    return torch.maximum(q * diff, (q - 1) * diff).mean()


RELATIVE_FLOOR = 0.1  # actuals below a tenth of the window's mean load weigh as if they were that tenth


def training_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: tuple[float, ...]) -> torch.Tensor:
    """Pinball loss of every quantile, the middle one's errors weighted by 1 / actual: the point forecast is
    judged by MAPE, whose minimiser on a skewed load is below the median (a single household's load)."""
    q = torch.tensor(quantiles, dtype=pred.dtype)
    diff = target.unsqueeze(-1) - pred
    loss = torch.maximum(q * diff, (q - 1) * diff)
    weight = torch.ones_like(loss)
    weight[..., len(quantiles) // 2] = 1.0 / torch.clamp(target, min=RELATIVE_FLOOR)
    return (loss * weight).mean()
