"""Utility simulator: an OpenADR 3 VTN (REST + webhook notifications) with fault injection.

``energy sim utility`` serves ``http://127.0.0.1:<port>/openadr3/3.1.0``.
"""
