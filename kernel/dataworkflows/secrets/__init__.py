"""Secrets: the encrypted credential store and its keys, secret fields of plugin configs,
and redaction of secret values from everything the engine writes."""
