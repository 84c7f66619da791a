"""The generic part of workflow validation (layer 4): YAML reading and value checks.

:class:`Checker` holds the file name and base folder of one load and turns
every problem into a :class:`WorkflowError` whose message is one line
``"<file>: <key.path>: <problem>; allowed: <values>"``. The workflow
sections (:mod:`crdask.pipeline.config`) and the cosmic-ray methods'
parameter objects (:mod:`crdask.pipeline.cosmics_config`) are checked with
it, so every key of a workflow reports errors the same way.

Example
-------
>>> ck = Checker("night.yaml", Path("/data"))
>>> ck.number(3, "steps.masters.hot_sigma", minimum=0, strict=True)
3.0
>>> ck.flag("yes", "steps.calibrate.enabled")
Traceback (most recent call last):
...
crdask.pipeline.schema.WorkflowError: night.yaml: steps.calibrate.enabled: expected true or false, got text 'yes'; allowed: true, false
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import re
from pathlib import Path

from ..cosmic.params import show, type_name
from ..io.sections import SectionError, parse_section

__all__ = ["WorkflowError", "Checker", "join_path", "show", "type_name", "read_yaml",
           "header_keyword", "reject_yaml_list", "section_or_keyword", "validator_error"]


# ---------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------

class WorkflowError(ValueError):
    """A bad workflow. ``str(err)`` is one line:
    ``"<file>: <key.path>: <problem>; allowed: <values>"`` (the ``allowed``
    part is left out only where nothing sensible can be listed)."""

    def __init__(self, source, path, problem, allowed=None):
        self.source, self.path, self.problem, self.allowed = source, path, problem, allowed
        text = f"{source}: {path}: {problem}" if path else f"{source}: {problem}"
        if allowed:
            text += f"; allowed: {allowed}"
        super().__init__(" ".join(text.split("\n")))

    def __reduce__(self):
        return (type(self), (self.source, self.path, self.problem, self.allowed))


def join_path(path, key):
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


# ---------------------------------------------------------------------------
# YAML: line numbers for syntax errors, duplicate keys refused, 1e-3 a number.
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _yaml_loader():
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):
        """Safe loader: duplicate keys refused, ``1e-3`` read as a number."""

    merge_tag = "tag:yaml.org,2002:merge"

    def construct_mapping(loader, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == merge_tag or not isinstance(key_node, yaml.ScalarNode):
                continue  # '<<' merges may be overridden; odd keys fail below
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return base.construct_mapping(loader, node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    return yaml, Loader


def read_yaml(path, source):
    yaml, Loader = _yaml_loader()
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise WorkflowError(source, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkflowError(source, "", f"cannot read the file ({e})") from None
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        where = (f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None
                 else "")
        text = problem + (f" ({context})" if context and problem != str(e) else "")
        raise WorkflowError(source, where, f"invalid YAML: {text}") from None


# ---------------------------------------------------------------------------
# Value checks. Each returns the normalised value or raises WorkflowError.
# ---------------------------------------------------------------------------

class Checker:
    """The file name and base folder for one load."""

    def __init__(self, source, base_dir):
        self.source = source
        self.base_dir = base_dir

    def error(self, path, problem, allowed=None):
        return WorkflowError(self.source, path, problem, allowed)

    def mapping(self, value, path, allowed_keys, *, none_ok=True, what=None):
        """A mapping with only ``allowed_keys``; None -> {} if ``none_ok``."""
        if value is None and none_ok:
            return {}
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {type_name(value)} "
                                   f"{show(value)}",
                             what or ", ".join(allowed_keys))
        for key in value:
            if not isinstance(key, str):
                raise self.error(join_path(path, str(key)),
                                 f"key {show(key)} must be text (quote it in YAML)",
                                 ", ".join(allowed_keys))
            if key not in allowed_keys:
                raise self.error(join_path(path, key), "unknown key", ", ".join(allowed_keys))
        return value

    def flag(self, value, path):
        if not isinstance(value, bool):
            raise self.error(path, f"expected true or false, got {type_name(value)} "
                                   f"{show(value)}", "true, false")
        return value

    def choice(self, value, path, allowed, *, none_ok=False):
        shown = ", ".join((["null"] if none_ok else []) + list(allowed))
        if value is None and none_ok:
            return None
        if not isinstance(value, str) or value not in allowed:
            raise self.error(path, f"{show(value)} is not allowed", shown)
        return value

    def number(self, value, path, *, minimum=None, strict=False, integer=False,
               none_ok=False):
        kind = "an integer" if integer else "a number"
        bound = ""
        if minimum is not None:
            bound = f" {'>' if strict else '>='} {minimum:g}"
        allowed = ("null or " if none_ok else "") + kind + bound
        if value is None and none_ok:
            return None
        ok_type = (isinstance(value, numbers.Integral) if integer
                   else isinstance(value, numbers.Real))
        if isinstance(value, bool) or not ok_type:
            raise self.error(path, f"expected {kind}, got {type_name(value)} "
                                   f"{show(value)}", allowed)
        v = int(value) if integer else float(value)
        if not math.isfinite(v) or (minimum is not None
                                    and (v <= minimum if strict else v < minimum)):
            raise self.error(path, f"{show(value)} is not allowed", allowed)
        return v

    def text(self, value, path, *, none_ok=False, allowed="text"):
        if value is None and none_ok:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(path, f"expected non-empty text, got {type_name(value)} "
                                   f"{show(value)}",
                             ("null or " if none_ok else "") + allowed)
        return value.strip()

    def path(self, value, path, *, none_ok=False):
        value = self.text(value, path, none_ok=none_ok,
                          allowed="a path (relative to the workflow file's folder)")
        if value is None:
            return None
        p = Path(os.path.expanduser(value))
        if not p.is_absolute():
            p = self.base_dir / p
        return Path(os.path.normpath(p))


# ---------------------------------------------------------------------------
# Sections.
# ---------------------------------------------------------------------------

_KEYWORD_RE = re.compile(r"^[A-Za-z0-9_\-]+(?: [A-Za-z0-9_\-]+)*$")


def header_keyword(ctx, value, path, allowed="a header keyword"):
    value = ctx.text(value, path, allowed=allowed)
    if not _KEYWORD_RE.match(value):
        raise ctx.error(path, f"{show(value)} is not a header keyword", allowed)
    return value


def reject_yaml_list(ctx, value, path, allowed):
    if isinstance(value, list):
        raise ctx.error(path, f"YAML read {show(value)} as a list: quote a section, "
                              "e.g. '[1:50,1:100]'", allowed)


def section_or_keyword(ctx, value, path):
    allowed = "null, a header keyword (e.g. BIASSEC) or a FITS section '[x1:x2,y1:y2]'"
    if value is None:
        return None
    reject_yaml_list(ctx, value, path, allowed)
    value = ctx.text(value, path, allowed=allowed)
    if value.startswith("["):
        try:
            parse_section(value)
        except SectionError as e:
            raise ctx.error(path, e.problem, allowed) from None
        return value
    return header_keyword(ctx, value, path, allowed)


_MSG_RE = re.compile(r"^(?P<name>\w+) must be (?P<req>.+?)[;,] got (?P<got>.+)$")


def _requirement(req):
    req = req.split(" (or the numpy", 1)[0]   # YAML cannot hold a function
    if req.startswith("one of "):
        return req[len("one of "):]
    if req[:1] in "<>":
        return f"a number {req}"
    return {"finite": "a finite number", "odd": "an odd integer"}.get(req, req)


def validator_error(ctx, exc, path_for, known):
    """Turn a crdask validator's one-line message into a WorkflowError at the
    key it names (``path_for(name)``)."""
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    m = _MSG_RE.match(msg)
    if m and m.group("name") in known:
        return ctx.error(path_for(m.group("name")), f"{m.group('got')} is not allowed",
                         _requirement(m.group("req")))
    name = msg.split(" ", 1)[0]
    return ctx.error(path_for(name if name in known else None), msg)


