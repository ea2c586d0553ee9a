"""Thin clients for the shared servers, built from settings; services compose them."""
