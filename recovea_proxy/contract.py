"""Each gateway endpoint's contract, declared beside its handler and used by it.

A handler of `/admin/v1` or `/v1/recovea` is decorated with `@declare(Operation(...))`
(or, in the modules mutation testing covers, given it on the line after its
definition, `declare(OPERATION)(handler)`: mutmut makes no mutants of a decorated
function): a summary, the JSON Schema of its request body and of its answer, its query and path
parameters, and the error statuses it can answer beyond those of the key wrapper
(`admin.api.keyed`: 401, 403, 503). The same `Operation` is read twice:

- by the wrapper, which validates the request body against `Operation.body` before
  the handler runs (`check_body`: unknown fields, each field's type, enum and
  bounds), so what `/openapi.json` says a body may hold is what is accepted;
- by `openapi.document`, which writes `/openapi.json` from the app's routes.

Schemas are plain dicts in the JSON Schema dialect of OpenAPI 3.1; the helpers below
only shorten them. `check_body` knows the subset they use: `type` (one or a list),
`enum`, `minimum`, `maximum`, `minLength`, `maxLength`, `items`, `maxItems`, and
`properties` with `additionalProperties: false` at the top level. Anything finer (a
rule's models, a price's decimals) is checked by the operation itself and answered
with 400, which every operation with a body declares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

Schema = dict[str, Any]
F = TypeVar("F", bound=Callable[..., Any])

#: the attribute an endpoint's `Operation` is kept under
ATTRIBUTE = "__recovea_operation__"


@dataclass(frozen=True, slots=True)
class Param:
    """A query or path parameter."""

    name: str
    schema: Schema
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    """What one endpoint takes and answers."""

    summary: str
    #: the body of its successful answer
    response: Schema
    status: int = 200
    #: the request body (a JSON object), None when it takes none
    body: Schema | None = None
    query: tuple[Param, ...] = ()
    #: path parameters whose schema is more than a plain string
    path: tuple[Param, ...] = ()
    #: error statuses beyond 401, 403 and 503 (and 400, 413 for a body)
    errors: tuple[int, ...] = ()
    #: set by the key wrapper: whether only admin keys may call it
    admin_only: bool = True
    #: False for the key wrapper's placeholder of a handler that declares nothing
    declared: bool = True


def declare(operation: Operation) -> Callable[[F], F]:
    """Attach `operation` to the handler it decorates."""

    def mark(handler: F) -> F:
        setattr(handler, ATTRIBUTE, operation)
        return handler

    return mark


def operation_of(endpoint: object) -> Operation | None:
    """The operation declared for a handler or an endpoint, if any."""
    found = getattr(endpoint, ATTRIBUTE, None)
    return found if isinstance(found, Operation) else None


# -- schema shorthands ----------------------------------------------------------------


def obj(
    properties: Mapping[str, Schema],
    *,
    required: tuple[str, ...] | None = None,
    closed: bool = False,
    description: str = "",
) -> Schema:
    """An object; every property required unless `required` says otherwise."""
    schema: Schema = {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties if required is None else required),
    }
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def nullable(schema: Schema) -> Schema:
    """`schema`, or null."""
    kind = schema["type"]
    kinds = kind if isinstance(kind, list) else [kind]
    return {**schema, "type": [*kinds, "null"]}


def string(**keywords: Any) -> Schema:
    return {"type": "string", **keywords}


def integer(**keywords: Any) -> Schema:
    return {"type": "integer", **keywords}


def boolean() -> Schema:
    return {"type": "boolean"}


def array(items: Schema, **keywords: Any) -> Schema:
    return {"type": "array", "items": items, **keywords}


def listing(item: Schema) -> Schema:
    """`{"data": [item, ...]}`."""
    return obj({"data": array(item)})


UUID = string(format="uuid")
MOMENT = string(description="ISO 8601 date or time")
#: a decimal amount of dollars, as a string
MONEY = string(pattern=r"^-?[0-9]+(\.[0-9]+)?$")


# -- the body check --------------------------------------------------------------------

_PYTHON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) in (int, float),
    "boolean": lambda v: type(v) is bool,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
_SAID = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
}


def check_body(body: Any, schema: Schema) -> dict[str, Any]:
    """`body` if it is an object `schema` allows; ValueError (a message for a person)
    otherwise."""
    if not isinstance(body, dict):
        raise ValueError("The body must be a JSON object.")
    properties: dict[str, Schema] = schema.get("properties", {})
    if schema.get("additionalProperties") is False:
        unknown = set(body) - set(properties)
        if unknown:
            raise ValueError(f"Unknown field(s): {', '.join(sorted(unknown))[:200]}.")
    for name in schema.get("required", ()):
        if name not in body:
            raise ValueError(f"{name} is required.")
    for name, value in body.items():
        if name in properties:
            check_value(value, properties[name], name)
    return body


def check_value(value: Any, schema: Schema, name: str) -> None:
    """ValueError unless `value` fits `schema` (the subset in the module docstring)."""
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(_PYTHON_TYPES[k](value) for k in kinds):
        said = " or ".join(_SAID.get(str(k), str(k)) for k in kinds if k != "null")
        raise ValueError(f"{name} must be {said}{', or null' if 'null' in kinds else ''}.")
    if value is None:
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(str(v) for v in schema["enum"] if v is not None)
        raise ValueError(f"{name} must be one of {allowed}.")
    if type(value) in (int, float):
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"{name} must be from {low} to {high}.")
    if isinstance(value, str) and not (
        schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
    ):
        raise ValueError(
            f"{name} must be {schema.get('minLength', 0)} to {schema['maxLength']} characters."
            if "maxLength" in schema
            else f"{name} must not be empty."
        )
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            raise ValueError(f"{name} may hold at most {schema['maxItems']} items.")
        for item in value:
            check_value(item, schema.get("items", {}), f"each of {name}")
