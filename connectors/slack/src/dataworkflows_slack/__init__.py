"""``slack.post-message``: post to a Slack channel with the official ``slack_sdk`` client.

Entry point only: the hooks import :mod:`dataworkflows_slack.action` (pydantic models;
slack_sdk and aiohttp when a message is posted) when the kernel asks for the types, and its
names are importable from here on first use.
"""

from __future__ import annotations

from typing import Any

from dataworkflows import hookimpl, lazy_attributes

__getattr__ = lazy_attributes(__name__, "dataworkflows_slack.action")

#: the plugin-API versions this plugin works with (README, "Plugin API versions")
dataworkflows_api = ">=1.1,<2"  # ctx.propagation_headers() is 1.1
#: what it registers (type: title), so `dataworkflows plugins` need not import it;
#: `dataworkflows plugins --check` compares this with the classes
dataworkflows_actions = {"slack.post-message": "Post a message to a Slack channel"}
dataworkflows_triggers = {}


@hookimpl
def register_actions(register: Any) -> None:
    from dataworkflows_slack.action import PostMessage

    register(PostMessage)
