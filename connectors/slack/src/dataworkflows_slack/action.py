"""``slack.post-message``: post to a Slack channel with the official ``slack_sdk`` client.

Parameters (JSON, camelCase):
    channel: a channel id (``C0123ABCD``) or name (``#general``).
    text: the message text (required unless ``blocks`` is given; then it is the
        notification fallback).
    blocks: Block Kit blocks (a list of objects).
    threadTs: ``ts`` of the parent message, to reply in a thread.
    credential: name of the credential holding the bot token (default ``slack``).
    timeoutSeconds: for the API call (default 30).

Outputs: ``{"channel", "ts", "threadTs", "text"}`` and a resource link
``slack/message/<channel>:<ts>``.

Errors (``chat.postMessage`` answers ``{"ok": false, "error": "..."}``): authentication,
permission and input errors (``invalid_auth``, ``not_authed``, ``channel_not_found``,
``not_in_channel``, ``missing_scope``, ``msg_too_long``...) fail the step permanently;
``ratelimited`` (HTTP 429), Slack-side errors (``internal_error``, ``fatal_error``,
``service_unavailable``, ``request_timeout``) and HTTP 5xx are retriable, honouring
``Retry-After``. Error codes are ``slack_<error>``.

Settings: ``DATAWORKFLOWS_SLACK_BASE_URL`` (default ``https://slack.com/api/``), e.g. for a
proxy or a test server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dataworkflows import Action, ActionContext, ActionResult, ResourceLink

if TYPE_CHECKING:
    from slack_sdk.errors import SlackApiError

DEFAULT_BASE_URL = "https://slack.com/api/"
BASE_URL_SETTING = "slack_base_url"

#: ``ok: false`` errors worth another attempt (the rest are permanent).
RETRIABLE_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)


class PostMessage(Action):
    """Post a message (optionally in a thread) with ``chat.postMessage``."""

    type = "slack.post-message"
    title = "Post a message to a Slack channel"

    class Params(BaseModel):
        """Post a message to a Slack channel (``chat.postMessage``), optionally as a reply
        in a thread. Outputs: ``channel``, ``ts`` (the message's id), ``threadTs`` and
        ``text``. Give ``text``, ``blocks`` or both."""

        model_config = ConfigDict(
            extra="forbid", populate_by_name=True, use_attribute_docstrings=True
        )

        channel: str = Field(min_length=1, max_length=200)
        """The channel to post to: its id (``C0123ABCD``) or its name (``#general``)."""
        text: str | None = Field(default=None, max_length=40000)
        """The message text (Slack ``mrkdwn``, up to 40000 characters). Required unless
        ``blocks`` is given; with ``blocks`` it is the notification fallback."""
        blocks: list[dict[str, Any]] | None = Field(default=None, max_length=50)
        """Block Kit blocks, a list of up to 50 block objects, for a rich message.
        Default: none."""
        thread_ts: str | None = Field(default=None, alias="threadTs")
        """The ``ts`` of a parent message, to reply in its thread (e.g. the ``ts`` output
        of an earlier post). Default: a new message in the channel."""
        credential: str = Field(default="slack", min_length=1, max_length=128)
        """The name of the credential holding the Slack bot token (``xoxb-...``).
        Default: ``slack``."""
        timeout_seconds: int = Field(default=30, ge=1, le=300, alias="timeoutSeconds")
        """Seconds the API call may take (1 to 300, default 30); a timeout is a retriable
        failure."""

        @model_validator(mode="after")
        def _text_or_blocks(self) -> PostMessage.Params:
            if not self.text and not self.blocks:
                raise ValueError("give text, blocks or both")
            return self

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        credential = await ctx.credentials.fetch(params.credential)  # before any request
        base_url = ctx.settings.get(BASE_URL_SETTING) or DEFAULT_BASE_URL
        if not base_url.startswith(("https://", "http://")):
            return ActionResult.failed(
                "DATAWORKFLOWS_SLACK_BASE_URL must be an http(s) URL", code="invalid_setting"
            )
        host = urlsplit(base_url).hostname
        if not credential.allows_host(host):
            return ActionResult.failed(
                f"credential {credential.name!r} may not be sent to {host}",
                code="credential_host_not_allowed",
                details={"host": host, "allowedHosts": list(credential.allowed_hosts)},
            )
        # slack_sdk and aiohttp are imported when a message is posted, not with the plugin:
        # `dataworkflows --help` and `dataworkflows plugins` never pay for them
        import aiohttp
        from slack_sdk.errors import SlackApiError
        from slack_sdk.web.async_client import AsyncWebClient

        client = AsyncWebClient(
            token=credential.secret,
            base_url=base_url,
            session=ctx.http,
            headers=ctx.propagation_headers(),  # the attempt's traceparent (tracing plugin)
            timeout=params.timeout_seconds,
            retry_handlers=[],  # retries belong to the engine (with the ledger's record)
        )
        request: dict[str, Any] = {"channel": params.channel}
        if params.text is not None:
            request["text"] = params.text
        if params.blocks is not None:
            request["blocks"] = params.blocks
        if params.thread_ts is not None:
            request["thread_ts"] = params.thread_ts
        try:
            response = await client.chat_postMessage(**request)
        except SlackApiError as exc:
            return _error_result(exc)
        except TimeoutError:
            return ActionResult.retriable(
                f"Slack did not answer within {params.timeout_seconds} s", code="timeout"
            )
        except (aiohttp.ClientError, OSError) as exc:
            return ActionResult.retriable(
                f"cannot reach Slack: {type(exc).__name__}: {exc}", code="connection_error"
            )
        channel = str(response.get("channel") or params.channel)
        ts = str(response.get("ts"))
        message = response.get("message") or {}
        return ActionResult.succeeded(
            {
                "channel": channel,
                "ts": ts,
                "threadTs": message.get("thread_ts") or params.thread_ts,
                "text": message.get("text", params.text),
            },
            links=(ResourceLink("slack", "message", f"{channel}:{ts}"),),
        )


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except (TypeError, ValueError):
        return None


def _error_result(exc: SlackApiError) -> ActionResult:
    response = exc.response
    status = getattr(response, "status_code", None)
    data = response.data if isinstance(getattr(response, "data", None), dict) else {}
    error = str(data.get("error") or f"http_{status}")
    details: dict[str, Any] = {"error": error, "status": status}
    for extra in ("needed", "provided", "warning", "errors"):
        if extra in data:
            details[extra] = data[extra]
    message = f"Slack chat.postMessage failed: {error} (HTTP {status})"
    code = f"slack_{error}"
    if status == 429 or (status is not None and status >= 500) or error in RETRIABLE_ERRORS:
        return ActionResult.retriable(
            message,
            code=code,
            details=details,
            retry_after=_retry_after(getattr(response, "headers", None)),
        )
    return ActionResult.failed(message, code=code, details=details)
