"""Server-side input validation for the Lambda API, driven by botocore's service model.

AWS validates every request against its model before the operation runs and
answers with a ``ValidationException`` whose message lists every violated
constraint, e.g.::

    2 validation errors detected: Value 'r1' at 'role' failed to satisfy constraint:
    Member must satisfy regular expression pattern: arn:...; Value '0' at 'timeout'
    failed to satisfy constraint: Member must have value greater than or equal to 1

This module compiles one checker tree per input shape (once, at start-up) and runs
it over the parsed input dict. Wording rules, as observed on real AWS:

* member paths are the lowerCamelCase member names joined by ``.``
  (``environment.variables``); members of structures inside lists are reached as
  ``list.<1-based index>.member.<name>``;
* values are rendered Java-style: ``'r1'``, ``'0'``, ``'[a, b]'``, ``'{k=v}'``;
  ``null`` without quotes; values of sensitive shapes are omitted (``Value at 'x'``);
* failing list elements / map keys / map values are reported once on the
  container, listing *all* constraints of the element shape
  (``Member must satisfy constraint: [..., Member must not be null]``,
  ``Map keys must satisfy constraint: [...]``, ``Map value must satisfy constraint: [...]``);
* errors come in model member order; for one scalar: pattern, enum, length, range;
* an unknown ``Runtime`` is not a ValidationException but an
  ``InvalidParameterValueException`` ("... or be a valid ARN"), raised only when
  nothing else failed (AWS checks it in the service, after model validation).

Blob members are never inspected (only their presence, when required).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from lambdad.errors import InvalidParameterValueException, ValidationException

__all__ = ["InputValidator", "lower_camel", "render_value"]

NOT_NULL = "Member must not be null"


def lower_camel(name: str) -> str:
    """``FunctionName`` -> ``functionName``; ``KMSKeyArn`` -> ``kMSKeyArn`` (as AWS does)."""
    return name[:1].lower() + name[1:]


def _java_double(value: float) -> str:
    """Render a float the way Java's ``Double.toString`` does (close enough for messages)."""
    if value != value or value in (float("inf"), float("-inf")):
        return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(value)]
    magnitude = abs(value)
    if magnitude == 0 or 1e-3 <= magnitude < 1e7:
        text = repr(value)
        return text if ("." in text or "e" in text) else text + ".0"
    # Scientific notation from the shortest round-trip digits: 1e-05 -> 1.0E-5.
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    assert isinstance(exponent, int)
    power = len(digit_tuple) + exponent - 1
    return f"{'-' if sign else ''}{digits[0]}.{digits[1:] or '0'}E{power}"


def _render_inner(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _java_double(value)
    if isinstance(value, Mapping):
        pairs = (f"{_render_inner(k)}={_render_inner(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render_inner(v) for v in value) + "]"
    return str(value)


def render_value(value: Any, sensitive: bool = False) -> str:
    """The ``Value ...`` prefix of one error: ``Value 'x'``, ``Value null``, ``Value``."""
    if value is None:
        return "Value null"
    if sensitive:
        return "Value"
    return f"Value '{_render_inner(value)}'"


def _java_length(text: str) -> int:
    """Length in UTF-16 code units, as Java's ``String.length()`` counts it."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def _fmt(bound: int | float) -> str:
    return _java_double(bound) if isinstance(bound, float) else str(bound)


class _Ctx:
    __slots__ = ("errors", "runtime_error")

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.runtime_error: str | None = None

    def add(self, value: Any, path: str, constraint: str, sensitive: bool) -> None:
        self.errors.append(
            f"{render_value(value, sensitive)} at '{path}' failed to satisfy constraint: "
            f"{constraint}"
        )


class _Node:
    """A checker for one shape. Scalars report failures; containers recurse."""

    __slots__ = ("sensitive",)
    scalar = False

    def __init__(self, sensitive: bool) -> None:
        self.sensitive = sensitive

    def check(self, value: Any, path: str, ctx: _Ctx) -> None:
        raise NotImplementedError

    def failures(self, value: Any) -> list[str]:
        """Violated constraints of a scalar value (empty if valid)."""
        return []

    def describe(self) -> list[str]:
        """All constraints of this shape, as listed for failing list elements / map entries."""
        return []


class _NoCheck(_Node):
    __slots__ = ()
    scalar = True

    def check(self, value: Any, path: str, ctx: _Ctx) -> None:
        return None


# A string member remembers up to this many values that passed its checks (not sensitive ones).
_REMEMBERED_STRINGS = 4096
_REMEMBERED_LENGTH = 256


class _StringNode(_Node):
    __slots__ = (
        "enum",
        "enum_msg",
        "max_len",
        "min_len",
        "passed",
        "pattern",
        "pattern_msg",
        "regex",
    )
    scalar = True

    def __init__(self, shape: Any) -> None:
        super().__init__(bool(shape.metadata.get("sensitive")))
        meta = shape.metadata
        self.min_len: int | None = meta.get("min")
        self.max_len: int | None = meta.get("max")
        self.pattern: str | None = meta.get("pattern")
        self.regex: re.Pattern[str] | None = None
        self.pattern_msg = ""
        if self.pattern is not None:
            try:
                self.regex = re.compile(self.pattern, re.ASCII)
            except re.error:  # a Java-only construct: skip the check rather than guess
                self.regex = None
            self.pattern_msg = f"Member must satisfy regular expression pattern: {self.pattern}"
        enum: list[str] = list(shape.enum or [])
        self.enum: frozenset[str] | None = frozenset(enum) if enum else None
        self.enum_msg = f"Member must satisfy enum value set: [{', '.join(enum)}]"
        # strings seen to pass every check (a function name: once, not once per Invoke)
        self.passed: set[str] = set()

    def failures(self, value: Any) -> list[str]:
        out: list[str] = []
        if self.regex is not None and self.regex.fullmatch(value) is None:
            out.append(self.pattern_msg)
        if self.enum is not None and value not in self.enum:
            out.append(self.enum_msg)
        if self.min_len is not None or self.max_len is not None:
            length = _java_length(value)
            if self.min_len is not None and length < self.min_len:
                out.append(f"Member must have length greater than or equal to {self.min_len}")
            if self.max_len is not None and length > self.max_len:
                out.append(f"Member must have length less than or equal to {self.max_len}")
        return out

    def describe(self) -> list[str]:
        out: list[str] = []
        if self.max_len is not None:
            out.append(f"Member must have length less than or equal to {self.max_len}")
        if self.min_len is not None:
            out.append(f"Member must have length greater than or equal to {self.min_len}")
        if self.pattern is not None and self.regex is not None:
            out.append(self.pattern_msg)
        if self.enum is not None:
            out.append(self.enum_msg)
        return out

    def check(self, value: Any, path: str, ctx: _Ctx) -> None:
        remember = type(value) is str and not self.sensitive and len(value) <= _REMEMBERED_LENGTH
        if remember and value in self.passed:
            return
        failures = self.failures(value)
        for failure in failures:
            ctx.add(value, path, failure, self.sensitive)
        if remember and not failures:
            if len(self.passed) >= _REMEMBERED_STRINGS:
                self.passed.clear()
            self.passed.add(value)


class _RuntimeNode(_StringNode):
    """``Runtime``: AWS answers InvalidParameterValueException, value unquoted."""

    __slots__ = ()

    def check(self, value: Any, path: str, ctx: _Ctx) -> None:
        if self.enum is not None and value not in self.enum:
            ctx.runtime_error = (
                f"Value {value} at '{path}' failed to satisfy constraint: "
                f"{self.enum_msg} or be a valid ARN"
            )


class _NumberNode(_Node):
    __slots__ = ("max_msg", "max_val", "min_msg", "min_val")
    scalar = True

    def __init__(self, shape: Any) -> None:
        super().__init__(bool(shape.metadata.get("sensitive")))
        self.min_val: int | float | None = shape.metadata.get("min")
        self.max_val: int | float | None = shape.metadata.get("max")
        self.min_msg = ""
        self.max_msg = ""
        if self.min_val is not None:
            self.min_msg = f"Member must have value greater than or equal to {_fmt(self.min_val)}"
        if self.max_val is not None:
            self.max_msg = f"Member must have value less than or equal to {_fmt(self.max_val)}"

    def failures(self, value: Any) -> list[str]:
        out: list[str] = []
        if self.min_val is not None and value < self.min_val:
            out.append(self.min_msg)
        if self.max_val is not None and value > self.max_val:
            out.append(self.max_msg)
        return out

    def describe(self) -> list[str]:
        out: list[str] = []
        if self.max_val is not None:
            out.append(self.max_msg)
        if self.min_val is not None:
            out.append(self.min_msg)
        return out

    def check(self, value: Any, path: str, ctx: _Ctx) -> None:
        if self.min_val is None and self.max_val is None:
            return
        for failure in self.failures(value):
            ctx.add(value, path, failure, self.sensitive)


def _size_failures(size: int, min_len: int | None, max_len: int | None) -> list[str]:
    out: list[str] = []
    if min_len is not None and size < min_len:
        out.append(f"Member must have length greater than or equal to {min_len}")
    if max_len is not None and size > max_len:
        out.append(f"Member must have length less than or equal to {max_len}")
    return out


class _ListNode(_Node):
    __slots__ = ("max_len", "member", "min_len")

    def __init__(self, shape: Any) -> None:
        super().__init__(bool(shape.metadata.get("sensitive")))
        self.min_len: int | None = shape.metadata.get("min")
        self.max_len: int | None = shape.metadata.get("max")
        self.member: _Node = _NoCheck(False)  # set by the compiler

    def check(self, value: Any, path: str, ctx: _Ctx) -> None:
        for failure in _size_failures(len(value), self.min_len, self.max_len):
            ctx.add(value, path, failure, self.sensitive)
        member = self.member
        if member.scalar:
            for item in value:
                if item is None or member.failures(item):
                    constraints = [*member.describe(), NOT_NULL]
                    ctx.add(
                        value,
                        path,
                        f"Member must satisfy constraint: [{', '.join(constraints)}]",
                        self.sensitive,
                    )
                    break
            return
        for index, item in enumerate(value, 1):
            item_path = f"{path}.{index}.member"
            if item is None:
                ctx.add(None, item_path, NOT_NULL, False)
            else:
                member.check(item, item_path, ctx)


class _MapNode(_Node):
    __slots__ = ("key", "max_len", "min_len", "value")

    def __init__(self, shape: Any) -> None:
        super().__init__(bool(shape.metadata.get("sensitive")))
        self.min_len: int | None = shape.metadata.get("min")
        self.max_len: int | None = shape.metadata.get("max")
        self.key: _Node = _NoCheck(False)
        self.value: _Node = _NoCheck(False)

    def check(self, value: Any, path: str, ctx: _Ctx) -> None:
        for failure in _size_failures(len(value), self.min_len, self.max_len):
            ctx.add(value, path, failure, self.sensitive)
        key_node, value_node = self.key, self.value
        if any(key_node.failures(k) for k in value):
            ctx.add(
                value,
                path,
                f"Map keys must satisfy constraint: [{', '.join(key_node.describe())}]",
                self.sensitive,
            )
        if value_node.scalar:
            if any(v is not None and value_node.failures(v) for v in value.values()):
                ctx.add(
                    value,
                    path,
                    "Map value must satisfy constraint: "
                    f"[{', '.join([*value_node.describe(), NOT_NULL])}]",
                    self.sensitive,
                )
            return
        for k, v in value.items():
            if v is not None:
                value_node.check(v, f"{path}.{k}", ctx)


class _StructNode(_Node):
    __slots__ = ("members",)

    def __init__(self, shape: Any) -> None:
        super().__init__(bool(shape.metadata.get("sensitive")))
        # (member name, path segment, required, checker or None when nothing to check)
        self.members: list[tuple[str, str, bool, _Node | None]] = []

    def check(self, value: Any, path: str, ctx: _Ctx) -> None:
        prefix = f"{path}." if path else ""
        for name, segment, required, node in self.members:
            item = value.get(name)
            if item is None:
                if required:
                    ctx.add(None, prefix + segment, NOT_NULL, False)
                continue
            if node is not None:
                node.check(item, prefix + segment, ctx)


class _Compiler:
    """Builds checker trees, one per shape name (shared, so recursive shapes terminate)."""

    def __init__(self) -> None:
        self._cache: dict[str, _Node] = {}

    def node(self, shape: Any) -> _Node:
        key = shape.name
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        kind = shape.type_name
        node: _Node
        if kind == "string":
            node = _StringNode(shape)
        elif kind in ("integer", "long", "double", "float"):
            node = _NumberNode(shape)
        elif kind == "list":
            node = _ListNode(shape)
            self._cache[key] = node
            node.member = self.node(shape.member)
        elif kind == "map":
            node = _MapNode(shape)
            self._cache[key] = node
            node.key = self.node(shape.key)
            node.value = self.node(shape.value)
        elif kind == "structure":
            node = _StructNode(shape)
            self._cache[key] = node
            required = set(shape.required_members)
            for name, member in shape.members.items():
                child = self.node(member)
                node.members.append(
                    (name, lower_camel(name), name in required, None if _trivial(child) else child)
                )
        else:  # boolean, blob, timestamp, document: nothing to check beyond presence
            node = _NoCheck(bool(shape.metadata.get("sensitive")))
        self._cache[key] = node
        return node


def _trivial(node: _Node) -> bool:
    if isinstance(node, _NoCheck):
        return True
    if isinstance(node, _StringNode):
        return (
            node.regex is None
            and node.enum is None
            and node.min_len is None
            and (node.max_len is None)
        )
    if isinstance(node, _NumberNode):
        return node.min_val is None and node.max_val is None
    return False


_SHARED = _Compiler()


class InputValidator:
    """Validates an operation's parsed input dict; raises the AWS error on failure."""

    __slots__ = ("_root",)

    def __init__(self, shape: Any | None) -> None:
        self._root: _StructNode | None = None
        if shape is None:
            return
        root = _SHARED.node(shape)
        assert isinstance(root, _StructNode)
        if "Runtime" in shape.members and shape.members["Runtime"].name == "Runtime":
            # Same tree, but the top-level Runtime member gets AWS's special treatment.
            special = _StructNode(shape)
            for name, segment, required, node in root.members:
                if name == "Runtime":
                    node = _RuntimeNode(shape.members["Runtime"])
                special.members.append((name, segment, required, node))
            root = special
        self._root = root

    def errors(self, params: Mapping[str, Any]) -> tuple[list[str], str | None]:
        """All validation errors, plus the Runtime error (reported only if alone)."""
        ctx = _Ctx()
        if self._root is not None:
            self._root.check(params, "", ctx)
        return ctx.errors, ctx.runtime_error

    def validate(self, params: Mapping[str, Any]) -> None:
        errors, runtime_error = self.errors(params)
        if errors:
            raise ValidationException(format_errors(errors))
        if runtime_error is not None:
            raise InvalidParameterValueException(runtime_error)


def format_errors(errors: Sequence[str]) -> str:
    count = len(errors)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: {'; '.join(errors)}"
