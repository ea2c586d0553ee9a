"""The network: LSTM encoder over the past, LSTM decoder over the horizon, and a quantile head that predicts
the *residual* over the seasonal-naive (same time last week) reference, so an output of zero is exactly
seasonal naive and training starts from it (the last layer is zero-initialised)."""

from __future__ import annotations

import torch
from torch import nn

INITIAL_HALF_WIDTH = 0.1  # band half-width per unit of softplus output, in units of the window's mean load


class QuantileLSTM(nn.Module):
    def __init__(self, enc_features: int, dec_features: int, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.LSTM(enc_features, hidden, batch_first=True)
        self.decoder = nn.LSTM(dec_features, hidden, batch_first=True)
        self.hidden_layer = nn.Linear(hidden + dec_features, hidden)
        self.out = nn.Linear(hidden, 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,L,Fe), (B,H,Fd), (B,H) -> (B,H,3) quantiles P10 <= P50 <= P90 in scaled units."""
        _, state = self.encoder(enc)
        out, _ = self.decoder(dec, state)
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
