"""Forecast: 24 h ahead load forecasts (LSTM, quantiles) written to PostgreSQL."""
