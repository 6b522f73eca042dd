"""The plugin host: finding plugins through entry points, loading them with pluggy and
indexing what they register (the contract itself is ``dataworkflows.hookspecs``)."""
