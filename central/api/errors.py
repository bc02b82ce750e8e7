"""The one error envelope every API failure uses, and the request id that ties it to the logs.

``{"detail": msg, "error": {"code", "message", "details": [...], "trace_id": "req_..."}}``; the
trace id is also sent as ``X-Request-ID`` on every response.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException

from central.api.extensions import jwt

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
ERROR_CODE_KEY = "error_code"  # on ``g``: the code of the envelope sent (counted in /metrics)
INVALID_CREDENTIALS = "Could not validate credentials"

CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "RESOURCE_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


class ApiError(Exception):
    """A failure the API reports to the client as it is: status, message, optional details."""

    def __init__(
        self,
        status: int,
        message: str,
        details: list[Any] | None = None,
        *,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []
        self.code = code


def request_id() -> str:
    if "request_id" not in g:
        g.request_id = f"req_{uuid.uuid4().hex[:16]}"
    return g.request_id


def error_response(
    status: int, message: str, details: list[Any] | None = None, code: str | None = None
) -> Response:
    """The envelope for ``status``; the only place an error body is built. ``code`` overrides
    the status's usual code (the research reference's ``INVALID_FILE_FORMAT`` is a 400)."""
    code = code or CODES.get(status, "ERROR")
    setattr(g, ERROR_CODE_KEY, code)
    body = {
        "detail": message,
        "error": {
            "code": code,
            "message": message,
            "details": details or [],
            "trace_id": request_id(),
        },
    }
    response = jsonify(body)
    response.status_code = status
    return response


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = exc.name
    if status == 429:
        message = f"Rate limit exceeded: {exc.description}"
    return error_response(status, message)


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error in request %s", request_id(), exc_info=exc)
    return error_response(500, "Internal Server Error")


def _credentials_refused(*_args: object) -> Response:
    return error_response(401, INVALID_CREDENTIALS)


def _assign_request_id() -> None:
    request_id()


def _set_request_id_header(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = request_id()
    return response


def init_errors(app: Flask) -> None:
    """Route every failure, including flask-jwt-extended's, through ``error_response``."""
    app.before_request(_assign_request_id)
    app.after_request(_set_request_id_header)
    app.register_error_handler(
        ApiError, lambda e: error_response(e.status, e.message, e.details, e.code)
    )
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    for loader in (
        jwt.unauthorized_loader,
        jwt.invalid_token_loader,
        jwt.expired_token_loader,
        jwt.revoked_token_loader,
        jwt.needs_fresh_token_loader,
        jwt.user_lookup_error_loader,
        jwt.token_verification_failed_loader,
    ):
        loader(_credentials_refused)
