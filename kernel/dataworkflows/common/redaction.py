"""Keeping secret values out of the ledger, events, API responses and logs.

Every kernel owns one :class:`Redactor` (``kernel.redactor``). Every secret the kernel hands
out — to an action (``ctx.credentials.get(...)``, ``ctx.credentials.mark_secret(...)``), to
a plugin (``PluginAPI.resolve_secret``) or written through the credentials API — is
registered with it. From then on:

* the kernel's run ledger replaces it in step parameters, outputs, errors and resource
  links before writing them (so events, ``on_run_event`` observers and API responses, which
  are read from those rows, never see it either);
* a log-record factory installed by
  :func:`~dataworkflows.common.log_redaction.install_log_redaction` replaces it in every
  log message and formatted traceback (:mod:`dataworkflows.common.log_redaction`).

A secret is recognised in the forms it most often leaks in: as is, URL-encoded (``%2F``
and ``+`` styles, upper- and lower-case hex), JSON-escaped and base64-encoded (standard and
URL-safe alphabets, at any byte alignment, so ``Basic base64(user:secret)`` is caught too).
Values shorter than :data:`MIN_SECRET_LENGTH` characters are not registered: they cannot be
told apart from ordinary text.

**Tenants.** A secret is registered *for* a tenant (the run's, or the credential's), and the
redactor records which tenants registered it (:meth:`Redactor.count`). Redaction itself is
not partitioned by tenant: a kernel redacts every secret it knows, of every tenant, in every
tenant's runs and in the logs. A tenant boundary is exactly where a leaked value must not be
shown, so scoping redaction to the owning tenant would let tenant B's run print tenant A's
token. The price — a value of B that happens to equal a secret of A is redacted in B's run
— reveals nothing B did not already hold. Kernels, however, are separate: a secret of one
kernel is not redacted in another kernel's ledger (logs excepted, see above). Code outside
any kernel (an action's own unit test) registers with the process-wide fallback
:data:`redactor`, whose secrets every kernel redacts too.

**Matching.** Each secret expands to its forms once, when it is added. Forms live in
Aho-Corasick automata (``ahocorasick_rs``), so redacting a text costs one pass over the text
per automaton, whatever the number of secrets. Automata are immutable, so the redactor keeps
a few of them over contiguous runs of secrets, in registration order:

* the *pending* automaton holds the newest secrets (fewer than ``seal_every``); :meth:`add`
  rebuilds it synchronously — small, so cheap — and a secret is redacted as soon as
  :meth:`add` returns;
* a full pending automaton is *sealed* (kept as it is) and a background thread merges the
  sealed ones into the built *levels*: the new run swallows the newest level while that
  level is at most ``growth`` times larger (a logarithmic method), and a level stops
  growing at ``max_level`` secrets. Levels therefore shrink geometrically — a few automata
  to scan (at most 5 at 10,000 secrets with the defaults) — and each secret is rebuilt
  O(log n) times in all (about 9 at 10,000), instead of every form of every secret being
  recompiled on every add.

The background build runs in a short-lived thread, never on the event loop's stack; note
that ``ahocorasick_rs`` holds the GIL while it builds, so a merge into a large level still
delays other Python threads for its duration (measured in ``benchmarks/RESULTS.md``); the
geometric merging makes such merges rare (a level of size S is rebuilt once per about S /
``growth`` additions) and ``max_level`` bounds the longest one.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import ahocorasick_rs

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4
_MIN_FRAGMENT = 4
#: secrets per pending automaton before it is sealed and merged in the background
SEAL_EVERY = 8
#: a new run of secrets is merged into the newest level while that level is at most this
#: many times larger (higher: fewer automata to scan, more rebuilding per secret)
GROWTH = 4
#: secrets per level at most: merges stop there, so that no single build (which holds the
#: GIL) takes long; more secrets mean more full levels, each one more pass per text
MAX_LEVEL = 8192


def secret_forms(secret: str) -> set[str]:
    """Every encoded form of ``secret`` the redactor looks for (including itself)."""
    forms = {secret}
    for encoded in (quote(secret, safe=""), quote(secret), quote_plus(secret)):
        forms.add(encoded)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), encoded))
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    raw = secret.encode()
    whole = base64.b64encode(raw).decode()
    forms |= {whole, whole.replace("+", "-").replace("/", "_")}
    for shift in range(3):
        encoded_std = base64.b64encode(b"\0" * shift + raw).decode().rstrip("=")
        # Characters that only depend on the secret's bytes, whatever surrounds it.
        start = -(-8 * shift // 6)
        end = (8 * (shift + len(raw))) // 6
        fragment = encoded_std[start:end]
        if len(fragment) >= _MIN_FRAGMENT:
            forms.add(fragment)
            forms.add(fragment.replace("+", "-").replace("/", "_"))
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


_SURROGATES = re.compile("[\ud800-\udfff]")


def _scannable(text: str) -> str:
    """``text`` with lone surrogates (``surrogateescape`` leftovers, which UTF-8 cannot
    encode, so the automata cannot scan) replaced by U+FFFD: same length, same indexes."""
    return text if text.isascii() else _SURROGATES.sub("\ufffd", text)


def _automaton(forms: Sequence[tuple[str, ...]]) -> ahocorasick_rs.AhoCorasick:
    """One automaton over the forms of several secrets (overlapping matches reported)."""
    patterns = list({_scannable(form) for secret in forms for form in secret})
    # the contiguous NFA: fast to scan and to build (the library's default picks a DFA for
    # small sets, 5-10x slower to build, which the pending automaton pays on every add)
    return ahocorasick_rs.AhoCorasick(
        patterns,
        matchkind=ahocorasick_rs.MatchKind.Standard,
        implementation=ahocorasick_rs.Implementation.ContiguousNFA,
    )


@dataclass(frozen=True, slots=True)
class _Shard:
    """An automaton over the secrets ``start:end`` of a redactor's registration log."""

    start: int
    end: int
    automaton: ahocorasick_rs.AhoCorasick

    @property
    def size(self) -> int:
        return self.end - self.start


def _spans(automata: Iterable[ahocorasick_rs.AhoCorasick], text: str) -> list[tuple[int, int]]:
    """The character ranges of ``text`` covered by any form, overlapping ones merged."""
    found: list[tuple[int, int, int]] = []
    try:
        for automaton in automata:
            found += automaton.find_matches_as_indexes(text, overlapping=True)
    except UnicodeEncodeError:  # lone surrogates: scan a copy with the same indexes
        return _spans(automata, _scannable(text)) if _scannable(text) != text else []
    if not found:
        return []
    found.sort(key=lambda match: match[1])
    spans: list[tuple[int, int]] = []
    start, end = found[0][1], found[0][2]
    for _, s, e in found[1:]:
        if s < end:  # overlaps the current span: grow it
            end = max(end, e)
        else:
            spans.append((start, end))
            start, end = s, e
    spans.append((start, end))
    return spans


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    parts: list[str] = []
    position = 0
    for start, end in spans:
        parts.append(text[position:start])
        parts.append(REDACTED)
        position = end
    parts.append(text[position:])
    return "".join(parts)


def redact_text_with(redactors: Iterable[Redactor], text: str) -> str:
    """``text`` with the secrets of every one of ``redactors`` replaced (one merged pass)."""
    if not text:
        return text
    # a kernel's redactor scans its parent's automata too: each automaton once
    automata = list({id(a): a for r in redactors for a in r.automata()}.values())
    spans = _spans(automata, text) if automata else []
    return _replace(text, spans) if spans else text


class Redactor:
    """The secrets of one kernel and the replacement of their forms in text and JSON.

    Thread-safe: :meth:`add` may be called from any thread; readers never take a lock (they
    read an immutable tuple of automata that writers replace).
    """

    def __init__(
        self,
        *,
        parent: Redactor | None = None,
        seal_every: int = SEAL_EVERY,
        growth: int = GROWTH,
        max_level: int = MAX_LEVEL,
    ) -> None:
        """``parent``: a redactor whose secrets this one redacts too (the kernel passes the
        process-wide fallback :data:`redactor`); ``seal_every`` and ``growth``: see the module
        docstring (tests use small values to exercise the background merges)."""
        if seal_every < 1 or growth < 1 or max_level < seal_every:
            raise ValueError("seal_every and growth must be at least 1, max_level >= seal_every")
        self._parent = parent
        self._seal_every = seal_every
        self._growth = growth
        self._max_level = max_level
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        #: secret -> tenants that registered it (None: registered outside any tenant)
        self._tenants: dict[str, set[str | None]] = {}
        #: the forms of every secret, in registration order (append-only)
        self._log: list[tuple[str, ...]] = []
        self._levels: list[_Shard] = []  # built by the background merge, largest first
        self._sealed: list[_Shard] = []  # full pending automata waiting to be merged
        self._pending: _Shard | None = None  # the newest secrets, rebuilt by add()
        self._view: tuple[ahocorasick_rs.AhoCorasick, ...] = ()
        self._builder: threading.Thread | None = None
        self._merges = 0

    # -- registration ---------------------------------------------------------------------

    def add(self, secret: str | None, tenant_id: str | None = None) -> None:
        """Register a secret for ``tenant_id`` (no-op for None, too short or known values).

        The secret is redacted everywhere as soon as this returns; merging it into the
        larger automata happens later, in a background thread.
        """
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            return
        tenants = self._tenants.get(secret)
        if tenants is not None and tenant_id in tenants:
            return
        forms = tuple(secret_forms(secret)) if tenants is None else ()  # outside the lock
        with self._lock:
            tenants = self._tenants.get(secret)
            if tenants is not None:  # known (perhaps added by another thread meanwhile)
                tenants.add(tenant_id)
                return
            self._tenants[secret] = {tenant_id}
            self._log.append(forms)
            start = self._pending.start if self._pending else self._built_end()
            end = len(self._log)
            shard = _Shard(start, end, _automaton(self._log[start:end]))
            if shard.size >= self._seal_every:
                self._sealed.append(shard)
                self._pending = None
                self._start_builder()
            else:
                self._pending = shard
            self._publish()

    def add_all(self, secrets: Iterable[str], tenant_id: str | None = None) -> None:
        """:meth:`add` each of ``secrets``."""
        for secret in secrets:
            self.add(secret, tenant_id)

    def count(self, tenant_id: str | None = None) -> int:
        """Secrets registered (by ``tenant_id`` when given, else by anyone)."""
        if tenant_id is None:
            return len(self._tenants)
        return sum(1 for tenants in list(self._tenants.values()) if tenant_id in tenants)

    # -- reading ---------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True once this redactor (or its parent) knows at least one secret."""
        return bool(self._view) or (self._parent is not None and self._parent.active)

    def automata(self) -> tuple[ahocorasick_rs.AhoCorasick, ...]:
        """The automata a text is scanned with: this redactor's, then its parent's."""
        if self._parent is None:
            return self._view
        return self._view + self._parent.automata()

    @property
    def shard_count(self) -> int:
        """How many automata this redactor's own secrets are spread over right now."""
        return len(self._view)

    @property
    def merges(self) -> int:
        """How many background merges have completed (for tests and benchmarks)."""
        return self._merges

    def redact_text(self, text: str) -> str:
        """``text`` with every known secret form replaced by ``[REDACTED]``."""
        automata = self.automata() if text else ()
        if not automata:
            return text
        spans = _spans(automata, text)
        return _replace(text, spans) if spans else text

    def redact(self, value: Any) -> Any:
        """A copy of a JSON-like value (dicts, lists, strings) with secrets replaced."""
        if not self.active:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {
                (self.redact_text(k) if isinstance(k, str) else k): self._walk(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._walk(v) for v in value]
        return value

    # -- background merging ----------------------------------------------------------------

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no background merge is running or due; False on ``timeout``.

        Redaction never needs this (a secret is redacted once :meth:`add` returns); tests
        and benchmarks use it to look at the settled shape.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._builder is None, timeout)

    def _built_end(self) -> int:
        if self._sealed:
            return self._sealed[-1].end
        return self._levels[-1].end if self._levels else 0

    def _publish(self) -> None:
        shards = [*self._levels, *self._sealed]
        if self._pending is not None:
            shards.append(self._pending)
        self._view = tuple(shard.automaton for shard in shards)

    def _start_builder(self) -> None:
        if self._builder is None:
            self._builder = threading.Thread(
                target=self._merge_loop, name="dataworkflows-redaction-merge", daemon=True
            )
            self._builder.start()

    def _plan(self) -> tuple[int, int, int, int] | None:
        """(first level merged, sealed shards merged, start, end), or None if nothing to do."""
        if not self._sealed:
            return None
        sealed = len(self._sealed)
        size = sum(shard.size for shard in self._sealed)
        first = len(self._levels)
        while (
            first > 0
            and self._levels[first - 1].size <= self._growth * size
            and self._levels[first - 1].size + size <= self._max_level
        ):
            first -= 1
            size += self._levels[first].size
        start = self._levels[first].start if first < len(self._levels) else self._sealed[0].start
        return first, sealed, start, self._sealed[-1].end

    def _merge_loop(self) -> None:
        while True:
            with self._lock:
                plan = self._plan()
                if plan is None:
                    self._builder = None
                    self._idle.notify_all()
                    return
                first, sealed, start, end = plan
                forms = self._log[start:end]
            if first == len(self._levels) and sealed == 1:
                merged = self._sealed[0]  # nothing to merge it with: promote it as it is
            else:
                try:
                    merged = _Shard(start, end, _automaton(forms))
                except BaseException:
                    with self._lock:  # leave the shards as they are (still redacting)
                        self._builder = None
                        self._idle.notify_all()
                    raise
            with self._lock:
                self._levels[first:] = [merged]
                del self._sealed[:sealed]
                self._merges += 1
                self._publish()


#: The process-wide fallback: secrets registered outside any kernel (e.g. by an action
#: under a unit test). Every kernel's redactor has it as parent, and logs always use it.
redactor = Redactor()
