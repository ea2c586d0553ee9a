"""pydantic models: the single definition of every event and API payload.

Events travel in a versioned :class:`~schemas.envelope.Envelope`; the registry in
:mod:`schemas.registry` maps ``(event_type, schema_version)`` to its model and is the
source of the JSON Schema files in ``schemas/jsonschema/`` (``energy schemas export``).
"""
