"""What every settings section shares."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A settings section: unknown keys are errors (a typo must not silently change nothing), and
    no number may be infinite or NaN (no setting means "forever")."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
