"""Global LSTM encoder-decoder with P10/P50/P90 outputs; pure feature code separated from torch."""
