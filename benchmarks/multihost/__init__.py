"""The multi-host fault test: ``python -m benchmarks.multihost`` (see its ``__main__``)."""
