"""Parameter declarations of the cosmic-ray methods (layer 2).

Each method writes its parameters down once, as a :class:`ParamSet` of
:class:`Param` entries (name, default, kind, bounds or choices, unit, a
one-line doc). Everything else derives from that one list:

* validation of the method's keyword arguments (:meth:`ParamSet.validate`),
  with one-line errors naming the parameter, the value and what is allowed;
* the workflow schema (``steps.cosmics.params`` in a night: the pipeline
  walks the same entries and reports errors as ``key.path: problem;
  allowed: ...``);
* the click options of the method's command (:meth:`ParamSet.click_options`);
* the HISTORY lines of every output (:meth:`ParamSet.history`) and the
  canonical form that enters the configuration hash
  (:meth:`ParamSet.canonical`).

Example
-------
>>> P = ParamSet("toy", [
...     Param("thresh", 5.0, "float", "threshold in sigma", minimum=0, strict=True),
...     Param("box", 11, "int", "median box side", unit="px", minimum=3, odd=True),
...     Param("mode", "fast", "choice", "how", choices=("fast", "exact")),
... ])
>>> P.validate({"box": 5})
{'thresh': 5.0, 'box': 5, 'mode': 'fast'}
>>> P.validate({"box": 4})
Traceback (most recent call last):
...
crdask.cosmic.params.ParamError: box: 4 is not allowed; allowed: an odd integer >= 3
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

__all__ = ["Param", "ParamSet", "ParamError", "ParamTypeError", "KINDS", "show",
           "type_name", "wrap_words"]

#: Value kinds a parameter may have. ``floats`` is a list of numbers,
#: ``float_or_pair`` a number or a list of two (numina's two-pass values),
#: ``any`` a value checked by the parameter's own ``check`` function only.
KINDS = ("float", "int", "bool", "choice", "str", "floats", "float_or_pair", "any")


class ParamError(ValueError):
    """A bad parameter value: ``str(err)`` is one line
    ``"<name>: <problem>; allowed: <allowed>"``; the parts are kept as
    ``name``, ``problem`` and ``allowed`` so a workflow loader can prefix
    the key path of its own file."""

    def __init__(self, name, problem, allowed=None):
        self.name, self.problem, self.allowed = name, problem, allowed
        text = f"{name}: {problem}" + (f"; allowed: {allowed}" if allowed else "")
        super().__init__(text)

    def __reduce__(self):
        return (type(self), (self.name, self.problem, self.allowed))


class ParamTypeError(ParamError, TypeError):
    """A parameter value of the wrong type (text for a number, ...)."""


def wrap_words(words, width=72):
    """Pack words into lines of at most ``width`` characters (a longer word
    stands alone): FITS HISTORY cards hold 72.

    Example
    -------
    >>> wrap_words(["sigclip=4.5", "objlim=5.0"], width=15)
    ['sigclip=4.5', 'objlim=5.0']
    """
    lines, line = [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    if line:
        lines.append(line)
    return lines


def show(value):
    """A value as the user wrote it, shortened for one-line messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "text",
               list: "a list", dict: "a mapping", type(None): "null"}


def type_name(value):
    """The kind of a value as a workflow author says it (``'text'``, ``'a list'``)."""
    return next((name for t, name in _TYPE_NAMES.items() if type(value) is t),
                type(value).__name__)


def _got(value):
    """``"text 'no'"``: what was received, with its kind, for messages."""
    return f"{type_name(value)} {show(value)}"


@dataclass(frozen=True)
class Param:
    """One parameter of a method.

    Parameters
    ----------
    name : str
        The keyword the method's function takes (astroscrappy's, ccdproc's,
        teareduce's or numina's name).
    default : object
        The function's default.
    kind : str
        One of :data:`KINDS`.
    doc : str
        One line: what it means, for ``--help`` and the workflow docs.
    unit : str
        Unit of the value (``'e-'``, ``'px'``, ``'sigma'``...), or ``''``.
    minimum, maximum : float, optional
        Bounds (inclusive unless ``strict``).
    strict : bool
        ``minimum``/``maximum`` are exclusive.
    choices : tuple of str, optional
        Allowed values for ``kind='choice'``.
    none_ok : bool
        ``None`` is allowed (means "not set" / "derive it").
    allow_inf : bool
        ``inf`` is allowed for a number (e.g. no saturation).
    odd : bool
        An integer that must be odd.
    workflow : bool
        ``False`` for values a night sets itself per frame (``gain``,
        ``readnoise``: frames are in electrons with known read noise); such
        a parameter is not accepted under ``steps.cosmics.params``.
    cli : bool
        ``False`` to keep it out of the method command's options (arrays).
    night_default : object
        The value a night uses when the workflow does not set it, if it
        differs from ``default`` (``satlevel``: the frame's own saturation
        bit is the saturation rule of a night, so no level). ``...`` means
        "same as ``default``".
    check : callable, optional
        ``check(value) -> value`` for ``kind='any'`` (or extra rules);
        raises ``ValueError`` with a short problem text.
    allowed_text : str, optional
        How to describe the allowed values in messages (derived if not given).
    """

    name: str
    default: object
    kind: str
    doc: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    strict: bool = False
    choices: tuple | None = None
    none_ok: bool = False
    allow_inf: bool = False
    odd: bool = False
    workflow: bool = True
    cli: bool = True
    night_default: object = ...
    check: object = field(default=None, compare=False)
    allowed_text: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Param {self.name}: kind must be one of {KINDS}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"Param {self.name}: a choice needs choices")

    # -- messages ------------------------------------------------------------
    def allowed(self):
        """The allowed values, as one phrase for error messages."""
        if self.allowed_text:
            return self.allowed_text
        prefix = "null or " if self.none_ok else ""
        if self.kind == "choice":
            return prefix + ", ".join(map(str, self.choices))
        if self.kind == "bool":
            return prefix + "true, false"
        if self.kind == "str":
            return prefix + "text"
        if self.kind == "any":
            return prefix + self.doc
        noun = "an odd integer" if self.odd else "an integer" if self.kind == "int" \
            else "a number"
        if self.kind == "floats":
            noun = "a list of numbers"
        elif self.kind == "float_or_pair":
            noun = "a number or a pair [pass 1, pass 2] of numbers"
        bounds = []
        if self.minimum is not None:
            bounds.append(f"{'>' if self.strict else '>='} {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"{'<' if self.strict else '<='} {self.maximum:g}")
        text = noun + (" " + " and ".join(bounds) if bounds else "")
        if self.allow_inf:
            text += " (inf allowed)"
        return prefix + text

    def _fail(self, value, problem=None, kind=ParamError):
        raise kind(self.name, problem or f"{show(value)} is not allowed", self.allowed())

    # -- validation ------------------------------------------------------------
    def _number(self, value, integer):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self._fail(value, f"expected {'an integer' if integer else 'a number'}, "
                              f"got {_got(value)}", ParamTypeError)
        v = float(value)
        if math.isnan(v) or (math.isinf(v) and not (self.allow_inf and not integer)):
            self._fail(value)
        if integer:
            if v != int(v):
                self._fail(value)
            v = int(v)
            if self.odd and v % 2 == 0:
                self._fail(value)
        lo, hi = self.minimum, self.maximum
        if lo is not None and (v <= lo if self.strict else v < lo):
            self._fail(value)
        if hi is not None and (v >= hi if self.strict else v > hi):
            self._fail(value)
        return v

    def validate(self, value):
        """The normalised value (``int``/``float``/``bool``/``str``/list), or
        :class:`ParamError`."""
        if value is None:
            if self.none_ok:
                return None
            self._fail(value, "null is not allowed")
        k = self.kind
        if k == "float":
            out = self._number(value, integer=False)
        elif k == "int":
            out = self._number(value, integer=True)
        elif k == "bool":
            if not isinstance(value, (bool,)) and type(value).__name__ != "bool_":
                self._fail(value, f"expected true or false, got {_got(value)}",
                           ParamTypeError)
            out = bool(value)
        elif k == "choice":
            if not isinstance(value, str) or value not in self.choices:
                self._fail(value)
            out = value
        elif k == "str":
            if not isinstance(value, str) or not value.strip():
                self._fail(value, f"expected non-empty text, got {_got(value)}")
            out = value
        elif k == "floats":
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                self._fail(value, f"expected a list, got {_got(value)}")
            out = [self._number(v, integer=False) for v in value]
        elif k == "float_or_pair":
            if isinstance(value, (list, tuple)):
                if len(value) != 2:
                    self._fail(value, f"expected two values, got {len(value)}")
                out = [self._number(v, integer=False) for v in value]
            else:
                out = self._number(value, integer=False)
        else:
            out = value
        if self.check is not None:
            try:
                out = self.check(out)
            except ParamError:
                raise
            except (ValueError, TypeError) as e:
                self._fail(value, str(e).splitlines()[0] if str(e) else None)
        return out

    def night_value(self):
        """The value a night uses when the workflow leaves it out."""
        return self.default if self.night_default is ... else self.night_default


class ParamSet:
    """The parameters of one method, in declaration (= signature) order.

    Parameters
    ----------
    method : str
        The method's registered name (used in messages and HISTORY).
    params : sequence of Param
    check : callable, optional
        ``check(values) -> values`` on the complete dict, for rules that
        tie parameters together; raises :class:`ParamError`.
    """

    def __init__(self, method, params, check=None):
        self.method = method
        self.check = check
        self.params = tuple(params)
        self._by_name = {p.name: p for p in self.params}
        if len(self._by_name) != len(self.params):
            raise ValueError(f"{method}: duplicate parameter names")

    def __iter__(self):
        return iter(self.params)

    def __contains__(self, name):
        return name in self._by_name

    def __getitem__(self, name):
        return self._by_name[name]

    def __repr__(self):
        return f"ParamSet({self.method!r}, {[p.name for p in self.params]})"

    @property
    def names(self):
        """Parameter names in declaration order."""
        return tuple(self._by_name)

    def defaults(self, *, night=False, workflow_only=False):
        """``{name: default}`` (``night=True``: the values a night uses;
        ``workflow_only=True``: without the values the pipeline sets)."""
        return {p.name: (p.night_value() if night else p.default) for p in self.params
                if not (workflow_only and not p.workflow)}

    def unknown(self, names, *, workflow_only=False):
        """The names that are not parameters (sorted)."""
        ok = {p.name for p in self.params if p.workflow or not workflow_only}
        return sorted(set(names) - ok)

    def closest(self, name):
        """The parameter name closest to a misspelt ``name`` (or None)."""
        import difflib
        hit = difflib.get_close_matches(name, self.names, n=1, cutoff=0.6)
        return hit[0] if hit else None

    def validate(self, values=None, *, night=False, workflow_only=False):
        """Complete, normalised parameters: ``values`` over the defaults.

        Raises :class:`ParamError` for an unknown name (naming the closest
        valid one) or a bad value. ``night``/``workflow_only`` as in
        :meth:`defaults`.
        """
        values = dict(values or {})
        bad = self.unknown(values, workflow_only=workflow_only)
        if bad:
            name = bad[0]
            near = self.closest(name)
            if near is not None and not (workflow_only and not self[near].workflow):
                hint = f"unknown parameter of {self.method} (did you mean {near}?)"
            else:
                hint = f"unknown parameter of {self.method}"
            allowed = [p.name for p in self.params if p.workflow or not workflow_only]
            raise ParamError(name, hint, ", ".join(allowed))
        out = self.defaults(night=night, workflow_only=workflow_only)
        out.update(values)
        # defaults too, so that 5 and 5.0 come out alike whoever wrote them
        out = {name: self[name].validate(value) for name, value in out.items()}
        if self.check is not None:
            out = self.check(out)
        return out

    # -- derived views -------------------------------------------------------
    def canonical(self, values):
        """JSON-able form for hashing: numbers as floats (``5`` == ``5.0``),
        in declaration order."""
        def canon(v):
            if isinstance(v, bool) or v is None or isinstance(v, str):
                return v
            if isinstance(v, numbers.Real):
                return float(v)
            if isinstance(v, (list, tuple)):
                return [canon(x) for x in v]
            if isinstance(v, dict):
                return {str(k): canon(x) for k, x in v.items()}
            return str(v)
        return {n: canon(values[n]) for n in self.names if n in values}

    def history(self, values, extra=()):
        """HISTORY lines (at most 72 characters each): the method name, then
        ``name=value`` for every parameter in ``values``, declaration order."""
        words = [f"cosmics {self.method}"]
        for name in self.names:
            if name in values:
                v = values[name]
                words.append(f"{name}={v!r}" if isinstance(v, str) else f"{name}={v}")
        words.extend(extra)
        return wrap_words(words)

    def click_options(self, *, skip=()):
        """A decorator adding one click option per CLI parameter: the same
        name (``--name-with-dashes``), default and help text; booleans as
        ``--name/--no-name``. Values are validated by :meth:`validate`
        afterwards, so click only parses them."""
        import click

        opts = []
        for p in self.params:
            if not p.cli or p.name in skip:
                continue
            flag = "--" + p.name.replace("_", "-")
            help_ = p.doc + (f" [{p.unit}]" if p.unit else "")
            if p.kind == "bool":
                opts.append(click.option(f"{flag}/--no-{p.name.replace('_', '-')}", p.name,
                                         default=p.default, show_default=True, help=help_))
                continue
            if p.kind == "choice":
                typ = click.Choice(list(p.choices))
            elif p.kind == "int":
                typ = int
            elif p.kind == "float":
                typ = float
            else:
                typ = str
            opts.append(click.option(flag, p.name, type=typ, default=p.default,
                                     show_default=True, help=help_))

        def decorate(f):
            for opt in reversed(opts):
                f = opt(f)
            return f
        return decorate

    def option_values(self, kwargs):
        """Pop this set's CLI option values out of a click ``kwargs`` dict."""
        return {p.name: kwargs.pop(p.name) for p in self.params
                if p.cli and p.name in kwargs}
