"""Type, range and choice checks of config values against their dataclass annotations (or a function's signature).

One walker serves every section: :class:`Section` converts each field to its annotation after ``__init__`` (YAML
lists to tuples, number strings such as ``'1e-4'`` to numbers) and checks the field's :class:`Rule`. A value that does
not fit raises a :class:`ConfigError` naming the section, the key, the value and what was expected::

    [search] metric='fid': expected one of domain_fid, domain_kid, inception_fid, fidelity, teacher_fid
    [diffusion] beta_start='abc': expected a number
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
import numbers
import operator
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

__all__ = ["ConfigError", "Rule", "Section", "setting", "check_value", "check_keys", "build_section", "describe"]

T = TypeVar("T")
_NONE = type(None)
_SEQUENCES = (tuple, list, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)
_NAMES = {bool: ("true or false", "booleans"), int: ("an int", "ints"), float: ("a number", "numbers"),
          str: ("a string", "strings")}
_BOUNDS = (("gt", operator.gt), ("ge", operator.ge), ("lt", operator.lt), ("le", operator.le))


class ConfigError(ValueError):
    """A config file or section that cannot be used as it is."""


class _Mismatch(Exception):
    """A value that does not fit an annotation (reworded into a ConfigError by :func:`check_value`)."""


@dataclass(frozen=True)
class Rule:
    """What a setting allows beyond its type: a closed set of values (a tuple, or a function returning one, so the
    set can live in the module that uses it) and/or bounds. Tuples are checked item by item."""

    choices: Union[Tuple[Any, ...], Callable[[], Sequence[Any]], None] = None
    gt: Optional[float] = None
    ge: Optional[float] = None
    lt: Optional[float] = None
    le: Optional[float] = None

    def allowed(self) -> Optional[Tuple[Any, ...]]:
        """The closed set of values, or None when any value of the type goes."""
        return tuple(self.choices() if callable(self.choices) else self.choices) if self.choices else None

    def admits(self, value: Any) -> bool:
        """Whether ``value`` (not None, already converted) is allowed."""
        if isinstance(value, tuple):
            return all(self.admits(v) for v in value)
        allowed = self.allowed()
        if allowed is not None and value not in allowed:
            return False
        return all(getattr(self, name) is None or ok(value, getattr(self, name)) for name, ok in _BOUNDS)

    def expectation(self, annotation: Any) -> str:
        """What the rule asks for, in words: ``one of a, b``, ``a number in (0, 1]``, ``an int > 0``."""
        allowed = self.allowed()
        if allowed is not None:
            return "one of " + ", ".join(str(c) for c in allowed)
        return f"{describe(_strip_none(annotation))} {self._bounds()}"

    def _bounds(self) -> str:
        low = f"({self.gt:g}" if self.gt is not None else f"[{self.ge:g}" if self.ge is not None else ""
        high = f"{self.lt:g})" if self.lt is not None else f"{self.le:g}]" if self.le is not None else ""
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f"> {self.gt:g}" if self.gt is not None else f">= {self.ge:g}"
        return f"< {self.lt:g}" if self.lt is not None else f"<= {self.le:g}"


def setting(default: Any, **rule: Any) -> Any:
    """A dataclass field with a default and a :class:`Rule` (``choices=``, ``gt=``, ``ge=``, ``lt=``, ``le=``)."""
    return field(default=default, metadata={"rule": Rule(**rule)})


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


@dataclass(frozen=True)
class Section:
    """Base of the config sections. After ``__init__`` every field is converted to its annotation and checked against
    its rule (:func:`check_value`), then :meth:`check` runs the checks that involve several fields."""

    SECTION: ClassVar[str] = ""  # the YAML section's name, in error messages

    def __post_init__(self):
        types = _field_types(type(self))
        for f in dataclasses.fields(self):
            value = check_value(types[f.name], getattr(self, f.name), self.SECTION, f.name, f.metadata.get("rule"))
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Checks across fields (none here); raise :class:`ConfigError`."""

    def fail(self, message: str) -> ConfigError:
        """A ConfigError for this section: ``[section] message``."""
        return ConfigError(f"{_where(self.SECTION)}{message}")


def check_value(annotation: Any, value: Any, section: str, key: str, rule: Optional[Rule] = None) -> Any:
    """``value`` converted to ``annotation`` and checked against ``rule``; a ConfigError naming section, key, value
    and expectation when it does not fit. A mapping for a dataclass annotation is built with :func:`build_section`."""
    try:
        out = _convert(annotation, value, key)
    except _Mismatch:
        raise ConfigError(f"{_where(section)}{key}={value!r}: expected {describe(annotation)}") from None
    if out is not None and rule is not None and not rule.admits(out):
        raise ConfigError(f"{_where(section)}{key}={value!r}: expected {rule.expectation(annotation)}")
    return out


def check_keys(values: Mapping[str, Any], names: Sequence[str], section: str) -> None:
    """Refuse keys of ``values`` that are not in ``names``."""
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{_where(section)}unknown key(s) {unknown}; expected some of {sorted(names)}")


def build_section(cls: Type[T], values: Optional[Mapping[str, Any]], section: str) -> T:
    """A :class:`Section` dataclass from a YAML mapping (None: all defaults); unknown keys refused."""
    values = dict(values or {})
    check_keys(values, [f.name for f in dataclasses.fields(cls)], section)
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"{_where(section)}{e}") from None


def describe(annotation: Any, plural: bool = False) -> str:
    """An annotation in words: ``an int``, ``a number or null``, ``a list of ints``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return "values" if plural else "anything"
    if origin is Union:
        text = " or ".join(describe(a, plural) for a in args if a is not _NONE)
        return text + " or null" if _NONE in args else text
    if origin in _SEQUENCES:
        items = [a for a in args if a is not Ellipsis]
        inner = describe(items[0], True) if len(set(items)) == 1 else ", ".join(describe(a) for a in items) or "values"
        return ("lists of " if plural else "a list of ") + inner
    if origin in _MAPPINGS or dataclasses.is_dataclass(annotation):
        return "mappings" if plural else "a mapping"
    if annotation in _NAMES:
        return _NAMES[annotation][plural]
    name = getattr(annotation, "__name__", str(annotation))
    return f"{name} values" if plural else f"a {name}"


def _where(section: str) -> str:
    return f"[{section}] " if section else ""


def _strip_none(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Union and _NONE in args:
        rest = tuple(a for a in args if a is not _NONE)
        return rest[0] if len(rest) == 1 else Union[rest]
    return annotation


def _convert(annotation: Any, value: Any, key: str) -> Any:
    """``value`` as ``annotation`` asks, or _Mismatch."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is Union:
        return _convert_union(args, value, key)
    if origin in _SEQUENCES:
        return _convert_sequence(origin, args, value, key)
    if origin in _MAPPINGS:
        if not isinstance(value, Mapping):
            raise _Mismatch
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return _convert_section(annotation, value, key)
    return _convert_scalar(annotation, value)


def _convert_union(args: Tuple[Any, ...], value: Any, key: str) -> Any:
    if value is None and _NONE in args:
        return None
    for arg in args:
        if arg is not _NONE:
            try:
                return _convert(arg, value, key)
            except _Mismatch:
                continue
    raise _Mismatch


def _convert_sequence(origin: Any, args: Tuple[Any, ...], value: Any, key: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _Mismatch
    if (len(args) == 2 and args[1] is Ellipsis) or len(args) == 1:
        items = tuple(_convert(args[0], v, key) for v in value)
    elif args:
        if len(args) != len(value):
            raise _Mismatch
        items = tuple(_convert(a, v, key) for a, v in zip(args, value))
    else:
        items = tuple(value)
    return list(items) if origin is list else items


def _convert_section(cls: type, value: Any, key: str) -> Any:
    if value is None or isinstance(value, Mapping):
        return build_section(cls, value, key)
    if isinstance(value, cls):
        return value
    raise _Mismatch


def _convert_scalar(annotation: Any, value: Any) -> Any:
    if annotation is bool or annotation is str:
        if not isinstance(value, annotation):
            raise _Mismatch
        return value
    if annotation is float:
        return _to_float(value)
    if annotation is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        number = _to_float(value)
        if not number.is_integer():
            raise _Mismatch
        return int(number)
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise _Mismatch
    return value


def _to_float(value: Any) -> float:
    """A finite number from a number or a string that parses as one (PyYAML reads ``1e-4`` as a string)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _Mismatch from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise _Mismatch
    return float(value)
