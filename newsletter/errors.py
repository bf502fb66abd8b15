"""The one error type for problems a person can fix (forms, CLI arguments, files)."""

from __future__ import annotations


class UserError(ValueError):
    """A problem a person can fix; `field` names the form field it belongs to, if any."""

    default_field = ""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = self.default_field if field is None else field
