"""Weather for the forecaster: two providers behind one interface, a per-grid-cell cache, fallbacks."""

from forecast.weather.types import HourlyWeather, WeatherResult, WeatherSource

__all__ = ["HourlyWeather", "WeatherResult", "WeatherSource"]
