"""The SOAP gateway parses one WSDL per distinct BMS interface, not one per building: two WSDLs
that differ only in their endpoint address share an identity; any other difference, or an
import that resolves against the document's own URL, does not."""

from __future__ import annotations

from dr_coordinator.adapters.bms_soap import wsdl_identity

WSDL = """<?xml version="1.0"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:t">
  <wsdl:types><xs:schema targetNamespace="urn:t">{schema}</xs:schema></wsdl:types>
  <wsdl:portType name="Bms"><wsdl:operation name="{operation}"/></wsdl:portType>
  <wsdl:service name="BmsService">
    <wsdl:port name="Bms" binding="Bms"><soap:address location="{address}"/></wsdl:port>
  </wsdl:service>
</wsdl:definitions>"""


def wsdl(address: str, operation: str = "SetSetpoint", schema: str = "") -> bytes:
    return WSDL.format(address=address, operation=operation, schema=schema).encode()


def test_wsdls_differing_only_in_address_share_an_identity() -> None:
    a = wsdl_identity(wsdl("http://127.0.0.1:1/bms/fac-001"))
    b = wsdl_identity(wsdl("http://127.0.0.1:1/bms/fac-002"))
    assert a is not None and a == b


def test_any_other_difference_is_another_identity() -> None:
    assert wsdl_identity(wsdl("http://h/bms/fac-001")) != wsdl_identity(wsdl("http://h/bms/fac-001", "RestoreZone"))


def test_documents_with_relative_imports_or_unparsable_ones_are_not_shared() -> None:
    imported = wsdl("http://h/bms/fac-001", schema='<xs:import namespace="urn:x" schemaLocation="types.xsd"/>')
    assert wsdl_identity(imported) is None
    assert wsdl_identity(b"<wsdl:definitions") is None
    # an import by namespace only (no location) resolves nothing against the URL: still shared
    by_namespace = wsdl("http://h/bms/fac-001", schema='<xs:import namespace="urn:x"/>')
    assert wsdl_identity(by_namespace) is not None
