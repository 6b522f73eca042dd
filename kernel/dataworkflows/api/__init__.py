"""The aiohttp application: the HTTP API and the routes plugins add."""

from dataworkflows.api.app import create_app

__all__ = ["create_app"]
