"""Adapters of the DR coordinator: the real implementations of :mod:`dr_coordinator.ports`.

``bms_soap.SoapBmsGateway`` (BMS over SOAP, zeep) and ``vtn_client.VtnClient`` (a utility's
OpenADR 3 VTN over REST) live here; import them from their modules (heavy imports stay lazy).
"""
