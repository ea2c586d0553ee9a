"""BMS simulator: one SOAP (WSDL) service per facility of the seeded fleet, served by one process.

``energy sim bms`` serves ``http://127.0.0.1:<port>/bms/<facility_id>?wsdl``; zone states go to
Redis (:mod:`sim.building_model`) so the meter simulator's load responds to DR commands.
"""
