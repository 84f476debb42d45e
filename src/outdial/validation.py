"""What the API accepts as text and as free-form JSON, checked once, at the door, by the
request schemas (every domain's `schemas.py` uses these types).

Both backends must store and give back whatever is accepted: PostgreSQL refuses a NUL
character in text and JSON, and no UTF-8 encoder takes a lone surrogate (JSON's `"\\ud800"`
escape parses to one), so such strings are refused with a 400 that names the field, wherever
they occur. Free-form JSON is bounded in nesting depth and serialised size so that every value
stored can be read back and sent on (see README, "Limits")."""

import json
import math
import re
from collections.abc import Callable, Hashable, Sequence
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

MAX_IDEMPOTENCY_KEY_LENGTH = 255
"""The longest `Idempotency-Key` header accepted (idempotency.py)."""
MAX_JSON_DEPTH = 32
"""Nesting levels of a free-form JSON value: `{}` is 1, `{"a": {}}` is 2."""
MAX_JSON_BYTES = 16 * 1024
"""Serialised size (compact JSON, UTF-8) of one free-form value: a call's or a recipient's
`metadata`, `variables`, `post_call`, a contact's `variables`, an agent's `post_call`."""
MAX_AGENT_CONFIG_BYTES = 64 * 1024
"""An agent's `config` may carry a prompt and tool definitions: it gets more room."""

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_character(text: str) -> str | None:
    """Why `text` cannot be stored (its first NUL or lone surrogate, and where), or None."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    what = "a NUL character" if char == "\x00" else f"a lone surrogate (U+{ord(char):04X})"
    return f"contains {what} at position {found.start()}"


def printable(text: str) -> str:
    """`text` with what `unstorable_character` finds escaped, so that an error message may
    quote it (a lone surrogate cannot even be encoded into the response)."""
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _check_text(value: Any) -> Any:
    if isinstance(value, str) and (problem := unstorable_character(value)):
        raise PydanticCustomError("unstorable_text", f"Text {problem}.")
    return value


# Request strings: any text but NUL and lone surrogates, in one of these lengths. The check
# runs before the string's own validation (pydantic refuses a surrogate in a length-bounded
# string without saying what is wrong with it), and the bounds sit inside each type, where
# pydantic reports them as string lengths even on an optional field.
_checked = BeforeValidator(_check_text)
ShortText = Annotated[str, StringConstraints(max_length=64), _checked]
"""Up to 64 characters: an id, a time zone, a time of day, a phone number as typed."""
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), _checked]
"""1 to 200 characters: an agent's or a campaign's name, a batch id, a participant identity."""
Label = Annotated[str, StringConstraints(max_length=200), _checked]
"""Up to 200 characters: a number's or a key's label, a participant's display name."""
Note = Annotated[str, StringConstraints(max_length=500), _checked]
"""Up to 500 characters: why a number is on the do-not-call list."""
Description = Annotated[str, StringConstraints(max_length=1000), _checked]
"""Up to 1,000 characters: a webhook endpoint's description."""
Url = Annotated[str, StringConstraints(max_length=2048), _checked]
"""Up to 2,048 characters: a URL, whose scheme and host the caller checks."""
LongText = Annotated[str, StringConstraints(max_length=5000), _checked]
"""Up to 5,000 characters: an agent's voicemail message."""


def json_problem(path: list[str | int], message: str) -> PydanticCustomError:
    """An error inside a JSON value; `path` is appended to the field's location."""
    return PydanticCustomError("invalid_json_value", message, {"path": path})


class _Refused(Exception):
    """Something in a JSON value must be refused: `_walk` finds and names it."""


def _size_bound(node: dict[str, Any] | list[Any], depth: int) -> int:
    """An upper bound of the compact UTF-8 serialisation of `node` (every character counted
    as 6 bytes, what its longest escape takes), raising _Refused where it holds anything that
    cannot be stored or read back. One pass, one regex search per object or array: the
    checks of a 500-recipient batch's metadata must cost little."""
    if depth > MAX_JSON_DEPTH:
        raise _Refused
    texts: list[str]
    if type(node) is dict:
        texts = list(node)
        values: Any = node.values()
        size = 2 + 2 * len(node)
    else:
        texts = []
        values = node
        size = 2 + len(node)
    for value in values:
        kind = type(value)
        if kind is str:
            texts.append(value)
        elif kind is dict or kind is list:
            size += _size_bound(value, depth + 1)
        elif kind is int:
            size += value.bit_length() // 3 + 2
        elif kind is float:
            if not math.isfinite(value):
                raise _Refused
            size += 24
        elif kind is bool or value is None:
            size += 5
        else:
            raise _Refused
    joined = "".join(texts)
    if _UNSTORABLE.search(joined):
        raise _Refused
    return size + 6 * len(joined) + 2 * len(texts)


def _walk(node: Any, depth: int, path: list[str | int]) -> None:
    """Raise, naming it by its path, the first key or value of `node` that cannot be stored
    or read back."""
    if depth > MAX_JSON_DEPTH:
        raise json_problem(path, f"Nested more than {MAX_JSON_DEPTH} levels deep.")
    items: Any = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        if type(key) is str and (problem := unstorable_character(key)):
            raise json_problem([*path, printable(key)], f"The key {problem}.")
        if isinstance(value, str):
            if problem := unstorable_character(value):
                raise json_problem([*path, key], f"Text {problem}.")
        elif isinstance(value, dict | list):
            path.append(key)
            _walk(value, depth + 1, path)
            path.pop()
        elif isinstance(value, float) and not math.isfinite(value):
            raise json_problem([*path, key], "NaN and Infinity are not JSON numbers.")
        elif not isinstance(value, int | float | bool) and value is not None:
            raise json_problem([*path, key], f"A {type(value).__name__} is not a JSON value.")


def _check_json_object(value: dict[str, Any], *, max_bytes: int) -> dict[str, Any]:
    if not value:
        return value
    try:
        bound = _size_bound(value, 1)
    except _Refused:
        _walk(value, 1, [])
        raise AssertionError("_size_bound refused what _walk accepts") from None
    if bound > max_bytes:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        if size > max_bytes:
            raise PydanticCustomError(
                "json_too_large",
                f"Serialised, this is {size:,} bytes: at most {max_bytes:,} are accepted.",
            )
    return value


def _check_free_form(value: dict[str, Any]) -> dict[str, Any]:
    return _check_json_object(value, max_bytes=MAX_JSON_BYTES)


def _check_agent_config(value: dict[str, Any]) -> dict[str, Any]:
    return _check_json_object(value, max_bytes=MAX_AGENT_CONFIG_BYTES)


JsonObject = Annotated[dict[str, Any], AfterValidator(_check_free_form)]
"""A free-form JSON object: at most MAX_JSON_DEPTH deep and MAX_JSON_BYTES serialised."""
AgentConfig = Annotated[dict[str, Any], AfterValidator(_check_agent_config)]
"""An agent's `config`: at most MAX_JSON_DEPTH deep and MAX_AGENT_CONFIG_BYTES serialised."""


# --- every problem in one answer ------------------------------------------------------------


def problem(loc: Sequence[str | int], kind: str, message: str, **details: Any) -> InitErrorDetails:
    """One entry of a validation error; `details` become fields of its entry in the answer."""
    return InitErrorDetails(
        type=PydanticCustomError(kind, message, {"details": details} if details else None),
        loc=tuple(loc),
        input=None,
    )


def _as_init_error(error: Any) -> InitErrorDetails:
    """A reported error, ready to be raised again alongside others."""
    ctx = error.get("ctx")
    return InitErrorDetails(
        type=PydanticCustomError(error["type"], error["msg"], ctx),
        loc=error["loc"],
        input=error.get("input"),
    )


def raise_all(title: str, failed: ValidationError | None, more: list[InitErrorDetails]) -> None:
    """Raise the errors of `failed` (if any) and `more` as one ValidationError."""
    errors = [_as_init_error(e) for e in failed.errors()] if failed is not None else []
    raise ValidationError.from_exception_data(title, [*errors, *more])


class RequestModel(BaseModel):
    """A request body whose rules across fields (`cross_field_problems`, judged on the raw
    input) are reported together with its fields' own errors, not only once those pass."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def cross_field_problems(cls, data: dict[str, Any]) -> list[InitErrorDetails]:
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        problems = cls.cross_field_problems(data) if isinstance(data, dict) else []
        if not problems:
            return handler(data)
        try:
            handler(data)
        except ValidationError as exc:
            raise_all(cls.__name__, exc, problems)
        raise_all(cls.__name__, None, problems)


def at_most(max_items: int) -> Any:
    """A BeforeValidator refusing a list of more than `max_items` before its items are
    validated: a 2 MiB body holds 100,000 numbers, a second of validation to then refuse.
    (Keep `max_length` on the list too: it documents the bound in the schema.)"""

    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > max_items:
            raise PydanticCustomError(
                "too_long", f"List should have at most {max_items} items, not {len(value)}."
            )
        return value

    return BeforeValidator(check)


def distinct(item_type: Any, key: Callable[[Any], str | tuple[str, ...]]) -> Any:
    """A WrapValidator for a list of `item_type` refusing two items with the same `key` (a
    number, or a tuple ending with one); each repeat is reported (`duplicate_recipient`, with
    its index and the first one's) together with the other items' own errors."""
    item = TypeAdapter(item_type)

    def key_if_valid(value: Any) -> Hashable | None:
        try:
            return key(item.validate_python(value))
        except ValidationError:
            return None

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            items = handler(value)
        except ValidationError as exc:
            if not isinstance(value, list):
                raise
            raise_all("list", exc, _repeats([key_if_valid(v) for v in value]))
        repeats = _repeats([key(i) for i in items])
        if repeats:
            raise_all("list", None, repeats)
        return items

    return WrapValidator(validate)


def _repeats(keys: list[Hashable | None]) -> list[InitErrorDetails]:
    first_seen: dict[Hashable, int] = {}
    found = []
    for index, k in enumerate(keys):
        if k is None:
            continue
        first = first_seen.setdefault(k, index)
        if first != index:
            identity = printable(k[-1] if isinstance(k, tuple) else str(k))
            found.append(
                problem(
                    [index],
                    "duplicate_recipient",
                    f"{identity} is already at index {first}.",
                    index=index,
                    identity=identity,
                    first_index=first,
                )
            )
    return found
