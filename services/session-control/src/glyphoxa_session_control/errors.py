"""Errors a request can end in; each carries its HTTP status and a message for the caller."""

from __future__ import annotations


class ControlError(Exception):
    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Invalid(ControlError):
    status = 422


class NotFound(ControlError):
    status = 404


class Conflict(ControlError):
    status = 409


class LimitReached(ControlError):
    """The tier's concurrent-session limit or monthly quota is used up."""

    status = 429


class Forbidden(ControlError):
    status = 403


class Unavailable(ControlError):
    status = 503
