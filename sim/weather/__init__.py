"""Weather provider simulator: WeatherAPI.com and Open-Meteo forecast JSON, with fault injection."""
