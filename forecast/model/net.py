"""The network: LSTM encoder over the past, LSTM decoder over the horizon, monotone quantile head."""

from __future__ import annotations

import torch
from torch import nn


class QuantileLSTM(nn.Module):
    def __init__(self, enc_features: int, dec_features: int, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.LSTM(enc_features, hidden, batch_first=True)
        self.decoder = nn.LSTM(dec_features, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden + dec_features, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        """(B,L,Fe), (B,H,Fd) -> (B,H,3) quantiles P10 <= P50 <= P90 in scaled units."""
        _, state = self.encoder(enc)
        out, _ = self.decoder(dec, state)
        raw = self.head(torch.cat([out, dec], dim=-1))
        mid = raw[..., 1]
        lo = mid - nn.functional.softplus(raw[..., 0])
        hi = mid + nn.functional.softplus(raw[..., 2])
        return torch.stack([lo, mid, hi], dim=-1)


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: tuple[float, ...]) -> torch.Tensor:
    q = torch.tensor(quantiles, dtype=pred.dtype)
    diff = target.unsqueeze(-1) - pred
    return torch.maximum(q * diff, (q - 1) * diff).mean()
