"""The aiohttp application: the HTTP API and the routes plugins add."""

from dataworkflows.web.app import create_app

__all__ = ["create_app"]
