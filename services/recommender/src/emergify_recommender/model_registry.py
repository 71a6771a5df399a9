"""Reading the current model (the newest row of ``model_versions``). Read-only."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from emergify_contracts.model import PortableModel
from emergify_contracts.tables import model_versions
from emergify_recommender.model import LoadedModel


def load_current_model(engine: Engine) -> LoadedModel | None:
    """The model with the highest version, or None when none has been trained yet."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(model_versions.name):
            return None
        row = (
            conn.execute(
                sa.select(model_versions.c.artifact, model_versions.c.metrics)
                .order_by(model_versions.c.version.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
    if row is None:
        return None
    return LoadedModel.from_portable(PortableModel.model_validate(row["artifact"]), row["metrics"])
