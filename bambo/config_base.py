"""The base of every bambo configuration object: frozen, strict, clear errors.

Besides :class:`FrozenConfig`, the strict field types of the run config live here
(:data:`Count`, :data:`Seed`, :data:`FiniteFloat`): pydantic's lax mode would take
``true`` as 1 and ``-0.0`` as a seed, hiding a mistake in a config file. Options
passed on as keyword arguments (a merge method's, a strategy's) are checked against
the annotations of what receives them by :func:`check_option_types`.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, ValidationError

from bambo.errors import ConfigError

MAX_COUNT = 10**6  # budgets, batch sizes, blocks, warm-start sizes: far above any real run
MAX_SEED = 2**32 - 1  # every seed consumer (torch, numpy, scipy) accepts 0 ... 2**32 - 1

Count = Annotated[int, Strict(), Field(ge=1, le=MAX_COUNT)]
"""A positive integer up to :data:`MAX_COUNT`; no bool, float or text."""
Seed = Annotated[int, Strict(), Field(ge=0, le=MAX_SEED)]
"""A seed, 0 ... :data:`MAX_SEED`; no bool, float or text."""
FiniteFloat = Annotated[float, Strict(), AllowInfNan(False)]
"""A finite number (an integer is taken); no bool, text, inf or nan."""


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field: message`` (nested bambo configs keep their inner field names)."""
    parts = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        msg = re.sub(r"^invalid [A-Za-z]+: ", "", msg)
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {msg}" if where else msg)  # a model-level check names its fields itself
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


def check_option_types(options: Mapping[str, Any], hints: Mapping[str, Any], where: str) -> None:
    """Check options against the annotations of what receives them, strictly.

    ``int`` takes an integer only (no bool, no float such as ``-0.0``): 0 ... :data:`MAX_SEED`
    for a ``seed``, 0 ... :data:`MAX_COUNT` otherwise (every integer option of a merge method
    or a strategy is a count or a seed). ``float`` takes a finite number, not a bool; ``bool``
    a bool; ``str`` text; a ``Literal`` one of its values; ``X | None`` also ``None``. Other
    annotations (sequences, mappings) are left to the receiver.

    Args:
        options: ``{name: value}`` from a config.
        hints: ``{name: annotation}`` of the receiver (options without one are skipped).
        where: The options' field, for messages (``merge.options``).

    Raises:
        ConfigError: Naming the option, its value and what it must be.
    """
    for key, value in options.items():
        if key in hints:
            _check_value(value, hints[key], f"{where}.{key}", key == "seed")


def _check_value(value: Any, hint: Any, name: str, is_seed: bool) -> None:
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        choices = [a for a in get_args(hint) if a is not type(None)]
        if value is None and len(choices) < len(get_args(hint)):
            return
        if len(choices) == 1:
            _check_value(value, choices[0], name, is_seed)
        return
    if origin is Literal:
        if value not in get_args(hint) or isinstance(value, bool) != any(isinstance(a, bool) for a in get_args(hint)):
            raise ConfigError(f"{name} must be one of {list(get_args(hint))}, got {value!r}")
        return
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
        high = MAX_SEED if is_seed else MAX_COUNT
        if not 0 <= value <= high:
            raise ConfigError(f"{name} must be between 0 and {high}, got {value}")
    elif hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r} ({type(value).__name__})")
    elif hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r} ({type(value).__name__})")
    elif hint is str and not isinstance(value, str):
        raise ConfigError(f"{name} must be text, got {value!r} ({type(value).__name__})")
