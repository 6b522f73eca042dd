"""Every table of the kernel, in one metadata (what Alembic compares against).

Feature areas keep their models in their own module; import each one here.
"""

from dataworkflows.db import (
    auth_models,
    connector_models,
    lifecycle_models,
    limit_models,
    models,
    partition_models,
    template_models,
    trigger_models,
)
from dataworkflows.db.models import Base

metadata = Base.metadata

__all__ = [
    "auth_models",
    "connector_models",
    "lifecycle_models",
    "limit_models",
    "metadata",
    "models",
    "partition_models",
    "template_models",
    "trigger_models",
]
