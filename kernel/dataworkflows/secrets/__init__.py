"""Secrets: the encrypted credential store and its keys, and the secret fields of plugin
configs (sealed at rest). Redacting secret values is :mod:`dataworkflows.common.redaction`."""
