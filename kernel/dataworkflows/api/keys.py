"""Typed keys for state kept on the aiohttp application."""

from __future__ import annotations

from aiohttp import web

from dataworkflows.kernel import Kernel

kernel_key = web.AppKey("dataworkflows_kernel", Kernel)
