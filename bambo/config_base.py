"""The base of every bambo configuration object: frozen, strict, clear errors."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bambo.errors import ConfigError


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field: message`` (nested bambo configs keep their inner field names)."""
    parts = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        msg = re.sub(r"^invalid [A-Za-z]+: ", "", msg)
        parts.append(f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {msg}")
    return "; ".join(parts)


class FrozenConfig(BaseModel):
    """A frozen pydantic model with ``extra="forbid"`` that raises :class:`ConfigError`.

    pydantic reports problems as ``ValidationError``; this base re-raises them as
    bambo's :class:`ConfigError` (still a ``ValueError``) naming each bad field,
    so callers catch one exception type for every bad setting.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(f"invalid {type(self).__name__}: {format_validation_error(exc)}") from None
