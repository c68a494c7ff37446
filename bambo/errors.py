"""The exceptions bambo raises.

Every error a user can cause derives from :class:`BamboError`, and also from the
builtin exception a caller would naturally catch (``ValueError`` for bad input,
``RuntimeError`` for a failed evaluation), so ``except ValueError`` keeps working.
Messages name the offending value: the tensor, the option, the index.
"""

from __future__ import annotations

from collections.abc import Iterable


class BamboError(Exception):
    """Base class of all bambo errors."""


class ConfigError(BamboError, ValueError):
    """An option, a name or a combination of settings is not valid."""


class UnknownNameError(ConfigError):
    """A registry lookup failed; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.valid = sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid names: {', '.join(self.valid)}")


class ModelMismatchError(BamboError, ValueError):
    """Models to be merged do not share keys, shapes or layer structure."""


class BoundsError(BamboError, ValueError):
    """A decision vector lies outside the search space or has the wrong shape."""


class NotFittedError(BamboError, RuntimeError):
    """A model was used before it was fitted (build and fit are separate steps)."""


class EvaluationError(BamboError, RuntimeError):
    """An objective evaluation raised or returned a non-finite metric."""


class InfeasibleError(BamboError, ValueError):
    """No candidate meets the constraints; the message gives the best achievable value of each."""


class StrategyError(BamboError, RuntimeError):
    """A strategy failed while proposing or learning; ``result`` keeps everything evaluated before.

    Attributes:
        result: The :class:`~bambo.strategies.ParetoResult` of the evaluations so far (or ``None``).
    """

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class RunAbortedError(EvaluationError):
    """A run stopped because every evaluation of its first batch failed for one reason.

    Attributes:
        reason: The error text the evaluations shared.
        result: The :class:`~bambo.result.ParetoResult` of the evaluations so far (or ``None``).
    """

    def __init__(self, message: str, reason: str, result: object = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.result = result


class BamboWarning(UserWarning):
    """Something a user should know that does not stop the run (the CLI prints it as a warning line)."""
