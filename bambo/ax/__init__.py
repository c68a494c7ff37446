"""Ax integration: bambo's surrogates inside Ax (:mod:`bambo.ax.adapters`), and bambo runs
as Ax experiments (:mod:`bambo.ax.export`). Importing registers nothing with Ax; the
adapter functions call :func:`register_with_ax` themselves."""

from bambo.ax.adapters import (
    AX_SURROGATES,
    AxGP,
    AxQuadraticSurrogate,
    generation_strategy,
    generator_kwargs,
    register_with_ax,
    surrogate_spec,
)
from bambo.ax.export import (
    PROPERTY_KEY,
    AxNames,
    ax_safe_names,
    check_ax_export,
    configure_client,
    export_to_ax,
    load_ax_export,
)

__all__ = [
    "AX_SURROGATES",
    "PROPERTY_KEY",
    "AxGP",
    "AxNames",
    "AxQuadraticSurrogate",
    "ax_safe_names",
    "check_ax_export",
    "configure_client",
    "export_to_ax",
    "generation_strategy",
    "generator_kwargs",
    "load_ax_export",
    "register_with_ax",
    "surrogate_spec",
]
