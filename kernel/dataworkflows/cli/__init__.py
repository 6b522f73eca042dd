"""The ``dataworkflows`` command line."""
