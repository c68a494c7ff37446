"""The one registry of merge methods, listed explicitly."""

from __future__ import annotations

from typing import Any

from bambo.errors import ConfigError, UnknownNameError
from bambo.merge.base import MergeMethod
from bambo.merge.breadcrumbs import Breadcrumbs
from bambo.merge.dare import DareLinear, DareTies
from bambo.merge.della import Della
from bambo.merge.linear import Linear, TaskArithmetic
from bambo.merge.slerp import Slerp
from bambo.merge.ties import Ties

MERGE_METHODS: dict[str, type[MergeMethod]] = {
    cls.name: cls for cls in (TaskArithmetic, Linear, Ties, DareLinear, DareTies, Breadcrumbs, Della, Slerp)
}


def available_merge_methods() -> list[str]:
    """Names of the registered merge methods."""
    return sorted(MERGE_METHODS)


def get_merge_method(name: str, **options: Any) -> MergeMethod:
    """Instantiate a merge method by name.

    Args:
        name: A registered name (see :func:`available_merge_methods`).
        **options: The method's options (e.g. ``density=0.2`` for TIES).

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists valid names.
        ConfigError: An option is unknown or out of range; the message names it.
    """
    try:
        cls = MERGE_METHODS[name]
    except KeyError:
        raise UnknownNameError("merge method", name, MERGE_METHODS) from None
    try:
        return cls(**options)
    except ConfigError as exc:
        allowed = ", ".join(cls.model_fields) or "none"
        raise ConfigError(f"merge method {name!r}: {exc} (its options: {allowed})") from None
