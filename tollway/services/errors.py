"""Errors the services raise; each face (admin API, CLI, UI) maps them to its own output."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: a message that is safe to show to the admin."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    """The id names nothing (HTTP 404)."""


class Invalid(ServiceError):
    """The input breaks a rule (HTTP 400/422)."""
