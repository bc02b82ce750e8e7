"""The OpenAPI 3.1 document, generated from the views' declared schemas, and the docs page.

Each view declares what it takes and returns with ``@operation(...)``; ``build_document`` walks
the app's URL map, so a route without a declaration is simply absent, and one with a declaration
cannot drift from the pydantic models the views validate and the tests check against.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import swagger_ui_bundle
from flask import Blueprint, Flask, current_app, jsonify, send_from_directory
from flask.typing import ResponseReturnValue
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from central.api.responses import ErrorEnvelope

F = TypeVar("F", bound=Callable[..., Any])

API_TITLE = "Battery RUL Monitoring API"
API_VERSION = "1.0.0"
DOC_PATH = "/api/v1/openapi.json"
_REF = "#/components/schemas/{model}"
_ERROR_TEXT = {
    400: "Bad request",
    401: "Missing, invalid, expired or revoked token; inactive user",
    403: "The role may not do this",
    404: "Not found",
    413: "Request body too large",
    422: "A parameter or body field failed validation (details name the field)",
    429: "Rate limit exceeded",
    503: "Not ready",
}
_PATH_PARAM = re.compile(r"<(?:[a-z_]+:)?([a-z_]+)>")


@dataclass(frozen=True)
class Operation:
    """What one view takes and returns."""

    summary: str
    tag: str
    response: type[BaseModel] | None  # None: no body (204)
    status: int = 200
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    # A multipart/form-data body: these text fields plus one binary part per name in ``files``.
    form: type[BaseModel] | None = None
    files: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()
    public: bool = False
    rate_limited: bool = True
    description: str | None = None
    path_params: dict[str, str] = field(default_factory=dict)  # name -> an example value
    # Statuses whose body is not the error envelope (readiness answers 503 with its own body).
    other_responses: dict[int, type[BaseModel]] = field(default_factory=dict)


def operation(**kwargs: Any) -> Callable[[F], F]:
    """Declare a view's OpenAPI operation (see ``Operation`` for the arguments)."""
    spec = Operation(**kwargs)

    def attach(view: F) -> F:
        view.__openapi__ = spec  # type: ignore[attr-defined]
        return view

    return attach


def _schemas(app: Flask) -> tuple[dict[str, Any], dict[str, Any]]:
    models: set[tuple[type[BaseModel], Literal["validation", "serialization"]]] = {
        (ErrorEnvelope, "serialization")
    }
    for view in app.view_functions.values():
        spec: Operation | None = getattr(view, "__openapi__", None)
        if spec is None:
            continue
        if spec.response is not None:
            models.add((spec.response, "serialization"))
        models.update((model, "serialization") for model in spec.other_responses.values())
        if spec.body is not None:
            models.add((spec.body, "validation"))
    ordered = sorted(models, key=lambda item: (item[0].__name__, item[1]))
    refs, defs = models_json_schema(ordered, ref_template=_REF)
    by_model = {model: refs[(model, mode)] for model, mode in ordered}
    return by_model, defs.get("$defs", {})


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=_REF)
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        description = prop.pop("description", None)
        prop.pop("title", None)
        # An optional parameter is absent, never "null": keep only the non-null branch.
        branches = [b for b in prop.pop("anyOf", []) if b != {"type": "null"}]
        if len(branches) == 1:
            prop.update(branches[0])
        if prop.get("default", 0) is None:
            del prop["default"]
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _success(model: type[BaseModel] | None, refs: dict[Any, Any]) -> dict[str, Any]:
    if model is None:
        return {"description": "No content"}
    doc = model.__doc__
    return {
        "description": doc.strip().splitlines()[0]
        if doc and doc != BaseModel.__doc__
        else "Success",
        "content": {"application/json": {"schema": refs[model]}},
    }


def _multipart(form: type[BaseModel], files: tuple[str, ...]) -> dict[str, Any]:
    """The form's fields inline (a multipart schema cannot be a reference in every tool)."""
    schema = form.model_json_schema(ref_template=_REF)
    properties = {name: {"type": "string", "format": "binary"} for name in files}
    properties.update(schema.get("properties", {}))
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": properties,
                    "required": [*files, *schema.get("required", [])],
                }
            }
        },
    }


def _error(status: int) -> dict[str, Any]:
    return {
        "description": _ERROR_TEXT.get(status, "Error"),
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorEnvelope")}}},
    }


def _operation(spec: Operation, path_params: list[str], refs: dict[Any, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {str(spec.status): _success(spec.response, refs)}
    errors = set(spec.errors) | ({429} if spec.rate_limited else set())
    if not spec.public:
        errors.add(401)
    if spec.query or spec.body or spec.form or path_params:
        errors.add(422)
    if path_params:
        errors.add(404)
    for status in sorted(errors - set(spec.other_responses)):
        responses[str(status)] = _error(status)
    for status, model in spec.other_responses.items():
        responses[str(status)] = {
            "description": _ERROR_TEXT.get(status, model.__name__),
            "content": {"application/json": {"schema": refs[model]}},
        }
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1},
            **(
                {"description": f"e.g. {spec.path_params[name]}", "example": spec.path_params[name]}
                if name in spec.path_params
                else {}
            ),
        }
        for name in path_params
    ]
    if spec.query is not None:
        parameters.extend(_query_parameters(spec.query))
    document: dict[str, Any] = {
        "summary": spec.summary,
        "tags": [spec.tag],
        "operationId": None,
        "parameters": parameters,
        "responses": responses,
    }
    if spec.description:
        document["description"] = spec.description
    if spec.body is not None:
        document["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[spec.body]}},
        }
    if spec.form is not None:
        document["requestBody"] = _multipart(spec.form, spec.files)
    document["security"] = [] if spec.public else [{"bearerAuth": []}]
    return document


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared route of ``app``."""
    refs, components = _schemas(app)
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        spec: Operation | None = getattr(app.view_functions[rule.endpoint], "__openapi__", None)
        if spec is None:
            continue
        path = _PATH_PARAM.sub(r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            document = _operation(spec, _PATH_PARAM.findall(rule.rule), refs)
            document["operationId"] = rule.endpoint.replace(".", "_")
            paths.setdefault(path, {})[method.lower()] = document
    return {
        "openapi": "3.1.0",
        "info": {
            "title": API_TITLE,
            "version": API_VERSION,
            "description": "Fleet telemetry, alerts and remaining useful life of UPS batteries.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


bp = Blueprint("openapi", __name__)
_SWAGGER_DIR = Path(swagger_ui_bundle.swagger_ui_path)
_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="/api/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/api/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "{url}", dom_id: "#swagger-ui"}});</script>
</body></html>"""


@bp.get(DOC_PATH)
def openapi_json() -> ResponseReturnValue:
    """Built on first request, when every blueprint is registered, and kept for the app's life."""
    document = current_app.extensions.get("brm_openapi")
    if document is None:
        document = current_app.extensions["brm_openapi"] = build_document(current_app)
    return jsonify(document)


@bp.get("/api/docs")
def docs() -> ResponseReturnValue:
    """Swagger UI, served from the pinned swagger-ui-bundle package (works offline)."""
    return _DOCS_PAGE.format(title=API_TITLE, url=DOC_PATH), 200, {"Content-Type": "text/html"}


@bp.get("/api/docs/static/<path:filename>")
def docs_static(filename: str) -> ResponseReturnValue:
    return send_from_directory(_SWAGGER_DIR, filename, max_age=86400)
