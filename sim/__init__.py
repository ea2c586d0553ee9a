"""Simulators of the third parties: meters (MQTT), BMS (SOAP), utility VTN (OpenADR 3), weather (HTTP JSON)."""
