"""Kernel behaviour that goes through the same hooks as any third-party plugin.

Listed in :data:`DEFAULT_PLUGINS`; ``dataworkflows plugins`` hides them unless ``--all``.
"""

from dataworkflows.plugins.builtin import env_secrets

DEFAULT_PLUGINS = (env_secrets,)
