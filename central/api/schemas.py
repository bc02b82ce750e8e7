"""Request bodies as pydantic models; a body that does not fit is a 422 naming field and issue."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from central.api.errors import ApiError

M = TypeVar("M", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class LoginBody(_Body):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1024)


class RefreshBody(_Body):
    refresh_token: str = Field(min_length=1)


class ChangePasswordBody(_Body):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


class CreateUserBody(_Body):
    user_id: str = Field(min_length=1, max_length=64)
    username: str = Field(min_length=1, max_length=100)
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    password: str = Field(min_length=8, max_length=1024)
    full_name: str | None = Field(None, max_length=200)
    role: str = "viewer"


class UpdateUserBody(_Body):
    email: str | None = Field(None, min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    full_name: str | None = Field(None, max_length=200)
    role: str | None = None
    is_active: bool | None = None


class Page(_Body):
    skip: int = Field(0, ge=0)
    limit: int = Field(100, ge=1, le=1000)


def _validation_error(exc: ValidationError, where: str) -> ApiError:
    details = [
        {
            "loc": [where, *(str(part) for part in error["loc"])],
            "field": ".".join(str(part) for part in error["loc"]) or where,
            "msg": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]
    message = "; ".join(f"{d['field']}: {d['msg']}" for d in details)
    return ApiError(422, message, details)


def parse_body(model: type[M]) -> M:
    """The JSON body as ``model``; raise a 422 ``ApiError`` otherwise."""
    data: Any = request.get_json(silent=True)
    if not isinstance(data, dict):
        detail = {"loc": ["body"], "field": "body", "msg": "Expected a JSON object", "type": "json"}
        raise ApiError(422, "body: Expected a JSON object", [detail])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, "body") from exc


def parse_query(model: type[M]) -> M:
    """The query string as ``model``; raise a 422 ``ApiError`` otherwise."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise _validation_error(exc, "query") from exc
