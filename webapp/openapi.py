"""The JSON API's OpenAPI 3.1 document, served at ``/api/openapi.json``.

The response schemas are derived from the dataclasses in ``webapp.models`` that the API
serializes (``to_json``), so the document cannot drift from what the endpoints return; a test
checks that every ``/api/`` route is described.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime
from typing import Any

from discorecs.genres import GENRES
from webapp import models
from webapp.views.genres import MAX_PAGE

_PRIMITIVES = {int: {"type": "integer"}, float: {"type": "number"}, str: {"type": "string"}}
_PRIMITIVES[bool] = {"type": "boolean"}


def _schema(hint: Any, components: dict[str, Any]) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [_schema(arg, components) for arg in args if arg is not type(None)]
        return {"oneOf": [*kinds, {"type": "null"}]} if type(None) in args else {"oneOf": kinds}
    if origin is list:
        return {"type": "array", "items": _schema(args[0], components)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(args[1], components)}
    if hint is datetime:
        return {"type": "string", "format": "date-time"}
    if dataclasses.is_dataclass(hint):
        return {"$ref": f"#/components/schemas/{_component(hint, components)}"}
    return dict(_PRIMITIVES[hint])


def _component(model: type, components: dict[str, Any]) -> str:
    name = model.__name__
    if name not in components:
        components[name] = {}  # reserve first: models refer to each other
        hints = typing.get_type_hints(model, vars(models))
        fields = [f.name for f in dataclasses.fields(model)]
        components[name] = {
            "type": "object",
            "properties": {field: _schema(hints[field], components) for field in fields},
            "required": fields,
        }
    return name


def _answer(model: type, components: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _schema(model, components)}},
    }


def document() -> dict[str, Any]:
    components: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
                }
            },
        }
    }
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    unavailable = {
        "description": "Cassandra is down or restarting; retry after `Retry-After` seconds",
        **error,
    }
    user_id = {
        "name": "user_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    }
    paths = {
        "/api/users/{user_id}": {
            "get": {
                "summary": "A user's page as data: profile, live collection size, "
                "recommendations, latest collection changes",
                "parameters": [user_id],
                "responses": {
                    "200": _answer(models.UserPage, components, "the user"),
                    "404": {"description": "no such user", **error},
                    "503": unavailable,
                },
            }
        },
        "/api/users/{user_id}/recommendations": {
            "get": {
                "summary": "The published run's recommended friend, runners-up and releases",
                "description": "Immutable per published run: the answer has a weak ETag (run "
                "and user), honours If-None-Match with 304, and says X-Cache: hit or miss.",
                "parameters": [user_id],
                "responses": {
                    "200": _answer(models.Recommendations, components, "the recommendations"),
                    "304": {"description": "unchanged since the ETag sent in If-None-Match"},
                    "404": {"description": "no such user, or no run has covered them", **error},
                    "503": unavailable,
                },
            }
        },
        "/api/genres/{genre}/leaderboard": {
            "get": {
                "summary": "A genre's leaderboard, 50 entries a page",
                "parameters": [
                    {
                        "name": "genre",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": list(GENRES)},
                    },
                    {
                        "name": "page",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_PAGE,
                            "default": 1,
                        },
                    },
                ],
                "responses": {
                    "200": _answer(models.Leaderboard, components, "one page"),
                    "400": {"description": "page is not a number in range", **error},
                    "404": {"description": "no such genre", **error},
                    "503": unavailable,
                },
            }
        },
        "/api/health": {
            "get": {
                "summary": "Published run, last batch runs, stream throughput and lag",
                "responses": {
                    "200": _answer(models.Health, components, "the pipeline's health"),
                    "503": unavailable,
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1 document"}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "discorecs API",
            "version": "1",
            "description": "Genre profiles, rankings and recommendations for vinyl collectors.",
        },
        "paths": paths,
        "components": {"schemas": components},
    }
