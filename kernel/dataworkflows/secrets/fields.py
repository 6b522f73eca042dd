"""Secret fields of plugin configs: found from the owner's schema, encrypted at rest.

A plugin declares which fields of its config (a trigger type's ``Config``, an action's
``Params``) are secrets, in its pydantic model: type the field ``pydantic.SecretStr``, or
give it ``Field(json_schema_extra={"writeOnly": True})``. Both end up as ``"writeOnly":
true`` in the model's JSON schema, which is all the kernel reads, so a third-party plugin
gets the same protection as a bundled one without any kernel code knowing its fields.

For every declared field the kernel:

* stores ``{"$encrypted": "v1.<key id>.<base64url(nonce + ciphertext + tag)>"}`` instead of
  the value (AES-256-GCM under the credential store's key, see
  :mod:`dataworkflows.secrets.credentials`; the associated data binds the ciphertext to its tenant,
  its owner — e.g. ``trigger:<id>`` — and its JSON path, so a value copied elsewhere does
  not decrypt);
* decrypts it only where the plugin needs it (the handle a plugin receives) and registers
  the value with the redactor then;
* shows it as ``"**********"`` in every API answer.

The plaintext is the JSON text of the value (any JSON type may be declared secret).
A value still in plaintext (written before migration ``0007``) is read as is and sealed
by the migration or by ``dataworkflows credentials re-encrypt``
(:mod:`dataworkflows.secrets.reseal`). Where the secrets are in a config comes from
:mod:`dataworkflows.secrets.secret_paths`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from dataworkflows.common.validation_messages import json_path
from dataworkflows.secrets.secret_paths import Path, model_secret_paths, transform

if TYPE_CHECKING:
    from dataworkflows.secrets.keys import KeyRing

#: the key of the JSON object that replaces a secret value at rest
ENVELOPE_KEY = "$encrypted"
#: what the API shows instead of a secret value
MASK = "**********"


def is_sealed(value: Any) -> bool:
    """Whether ``value`` is the at-rest form of a secret."""
    return isinstance(value, Mapping) and set(value) == {ENVELOPE_KEY}


def _name(owner: str, where: str) -> str:
    return f"{owner}:{where}"


@dataclass
class SecretFields:
    """Seals, opens and masks the declared secrets of one owner's config.

    ``owner`` names what the config belongs to (``trigger:<id>``); it is bound into each
    ciphertext with the tenant and the JSON path.
    """

    paths: frozenset[Path]
    tenant_id: str
    owner: str
    #: equal values at the same place give equal tokens (see ``KeyRing.encrypt``)
    deterministic: bool = False

    def _encrypt(self, keyring: KeyRing, value: Any, where: str) -> dict[str, str]:
        token = keyring.encrypt(
            json.dumps(value),
            self.tenant_id,
            _name(self.owner, where),
            deterministic=self.deterministic,
        )
        return {ENVELOPE_KEY: token}

    def seal(self, config: Any, keyring: KeyRing | None) -> Any:
        """The config with every plaintext secret encrypted under the first key.

        ``keyring`` None is allowed only when the config holds no plaintext secret
        (:class:`~dataworkflows.secrets.keys.SecretKeyError` otherwise)."""

        def seal_one(value: Any, where: str) -> Any:
            if is_sealed(value):
                return value
            if keyring is None:
                from dataworkflows.secrets.keys import SecretKeyError

                raise SecretKeyError("no secret key to encrypt a secret field with")
            return self._encrypt(keyring, value, where)

        return transform(config, self.paths, seal_one)

    def open(self, config: Any, keyring: KeyRing | None) -> Any:
        """The config with every sealed secret decrypted (plaintext ones are kept)."""

        def open_one(value: Any, where: str) -> Any:
            if not is_sealed(value):
                return value
            if keyring is None:
                from dataworkflows.secrets.keys import SecretKeyError

                raise SecretKeyError(f"the secret field {where} cannot be decrypted without a key")
            return json.loads(
                keyring.decrypt(value[ENVELOPE_KEY], self.tenant_id, _name(self.owner, where))
            )

        return transform(config, self.paths, open_one)

    def reseal(self, config: Any, keyring: KeyRing) -> tuple[Any, bool]:
        """(config, changed): plaintext secrets sealed, secrets under an older key sealed
        again under the first key; ones already under the first key left alone."""
        changed = False

        def reseal_one(value: Any, where: str) -> Any:
            nonlocal changed
            name = _name(self.owner, where)
            if is_sealed(value):
                token = value[ENVELOPE_KEY]
                if token.split(".", 2)[1:2] == [keyring.primary_id]:
                    return value
                value = json.loads(keyring.decrypt(token, self.tenant_id, name))
            changed = True
            return self._encrypt(keyring, value, where)

        return transform(config, self.paths, reseal_one), changed

    def mask(self, config: Any) -> Any:
        """The config as the API shows it: every secret replaced by :data:`MASK`."""
        return transform(config, self.paths, lambda value, where: MASK)

    def values(self, config: Any) -> dict[str, Any]:
        """``{json_path: value}`` of every secret present in a config."""
        found: dict[str, Any] = {}

        def collect(value: Any, where: str) -> Any:
            found[where] = value
            return value

        transform(config, self.paths, collect)
        return found

    def masked_without_value(self, config: Any) -> list[str]:
        """JSON paths where a secret is still :data:`MASK` (nothing stored to keep)."""
        return [where for where, value in self.values(config).items() if value == MASK]

    def keep_masked(self, new: Any, old: Any) -> Any:
        """``new`` where a secret sent back as :data:`MASK` keeps ``old``'s value at the
        same path (a client may PUT what it read)."""
        previous = self.values(old)
        return transform(
            new,
            self.paths,
            lambda value, where: previous.get(where, value) if value == MASK else value,
        )


class DefinitionSecrets:
    """The secret parameters of a workflow definition's nodes, as declared by each node's
    action (its ``Params`` model). Workflow ids are global, so a token is bound to the
    workflow id, the node id and the JSON path inside the node's ``parameters``. Tokens
    are deterministic (equal definitions keep equal checksums and audit diffs)."""

    def __init__(self, models: Mapping[str, type[BaseModel]]) -> None:
        """``models``: action type → its ``Params`` model."""
        self.models = models

    def _fields(self, workflow_id: str, node: Any) -> SecretFields | None:
        if not isinstance(node, Mapping) or not isinstance(node.get("parameters"), Mapping):
            return None
        model = self.models.get(node.get("actionType"))  # type: ignore[arg-type]
        paths = model_secret_paths(model) if model is not None else frozenset()
        if not paths:
            return None
        return SecretFields(paths, "", f"workflow:{workflow_id}:node:{node.get('id')}", True)

    def _each(self, definition: Any, fn: Callable[[SecretFields, Any], Any]) -> Any:
        """A copy of the definition with ``fn(fields, parameters)`` applied to the
        parameters of every node that has secret fields."""
        if not isinstance(definition, Mapping) or not isinstance(definition.get("nodes"), list):
            return definition
        workflow_id = str(definition.get("id"))
        nodes = []
        for node in definition["nodes"]:
            fields = self._fields(workflow_id, node)
            if fields is not None:
                node = {**node, "parameters": fn(fields, node["parameters"])}
            nodes.append(node)
        return {**definition, "nodes": nodes}

    def values(self, definition: Any) -> dict[str, Any]:
        """``{"<node id>:<json path>": value}`` of every secret parameter present."""
        found: dict[str, Any] = {}

        def collect(fields: SecretFields, params: Any) -> Any:
            for where, value in fields.values(params).items():
                found[f"{fields.owner}:{where}"] = value
            return params

        self._each(definition, collect)
        return found

    def seal(self, definition: Any, keyring: KeyRing | None) -> Any:
        """The definition to store (see :meth:`SecretFields.seal`)."""
        return self._each(definition, lambda fields, params: fields.seal(params, keyring))

    def open(self, definition: Any, keyring: KeyRing | None) -> Any:
        """The stored definition with its secret parameters decrypted."""
        return self._each(definition, lambda fields, params: fields.open(params, keyring))

    def mask(self, definition: Any) -> Any:
        """The definition as the API shows it."""
        return self._each(definition, lambda fields, params: fields.mask(params))

    def keep_masked(self, new: Any, old: Any) -> Any:
        """``new`` where a secret parameter sent back as :data:`MASK` keeps the value of
        the node with the same id and action type in ``old`` (a client may send back a
        definition it read)."""
        old_nodes = {
            (n.get("id"), n.get("actionType")): n.get("parameters")
            for n in (old.get("nodes") or [] if isinstance(old, Mapping) else [])
            if isinstance(n, Mapping)
        }
        if not isinstance(new, Mapping) or not isinstance(new.get("nodes"), list):
            return new
        nodes = []
        for node in new["nodes"]:
            fields = self._fields(str(new.get("id")), node)
            previous = old_nodes.get((node.get("id"), node.get("actionType")))
            if fields is not None and previous is not None:
                node = {**node, "parameters": fields.keep_masked(node["parameters"], previous)}
            nodes.append(node)
        return {**new, "nodes": nodes}

    def masked_without_value(self, definition: Any) -> list[str]:
        """JSON paths (``$.nodes[i].parameters...``) where a secret parameter is still
        :data:`MASK` (nothing stored to keep)."""
        found: list[str] = []
        if not isinstance(definition, Mapping) or not isinstance(definition.get("nodes"), list):
            return found
        for index, node in enumerate(definition["nodes"]):
            fields = self._fields(str(definition.get("id")), node)
            if fields is not None:
                root = f"$.nodes[{index}].parameters"
                found += [root + w[1:] for w in fields.masked_without_value(node["parameters"])]
        return found

    def reseal(self, definition: Any, keyring: KeyRing) -> tuple[Any, bool]:
        """(definition, changed) with every secret sealed under the first key."""
        changed = False

        def reseal_params(fields: SecretFields, params: Any) -> Any:
            nonlocal changed
            new, node_changed = fields.reseal(params, keyring)
            changed = changed or node_changed
            return new

        return self._each(definition, reseal_params), changed


def trigger_fields(model: type[BaseModel], tenant_id: str, trigger_id: str) -> SecretFields:
    """The secret fields of a trigger's config (``model``: its type's ``Config``)."""
    return SecretFields(model_secret_paths(model), tenant_id, f"trigger:{trigger_id}")


def plaintexts(values: Mapping[str, Any]) -> Iterator[str]:
    """Every string inside secret values (what the redactor must know)."""
    stack = list(values.values())
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def safe_errors(exc: ValidationError, root: str) -> str:
    """A validation error as text without the offending input values (which may be
    secrets): ``"<path>: <message>; ..."``."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        parts.append(f"{json_path(tuple(err.get('loc', ())), root)}: {err['msg']}")
    return "; ".join(parts)
