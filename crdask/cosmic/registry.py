"""The registry of cosmic-ray methods (layer 2).

A method is one module under ``crdask/cosmic/`` that declares a
:class:`~crdask.cosmic.params.ParamSet`, writes one detect function with the
convention below and registers both by name with its kind::

    register(Method("lacosmic", "frame", PARAMS, detect_frame))

The pipeline, the workflow loader and the CLI look methods up here and never
branch on a method's name.

Detect conventions (frames reach a method in electrons, with their
variance and their unusable pixels, the same way for every method):

``frame`` methods
    ``detect(data, params, *, bad=None, var=None, readnoise=0.0,
    num_threads=None) -> CRResult`` with ``data`` a 2-D float32 array
    ``(y, x)`` in e-, ``bad`` a bool array (True = never flag, never use;
    returned unchanged), ``var`` the variance in e-^2, ``readnoise`` in e-,
    ``params`` the complete validated parameters. ``CRResult.clean`` is the
    cleaned float32 frame and ``CRResult.crmask`` the bool CR mask.
``group`` methods
    ``detect(data, params, *, bad=None, var=None, readnoise=None,
    num_threads=None) -> CRResult`` with ``data`` a list of N equivalent
    exposures (2-D, same shape, e-), ``bad``/``var`` lists of the same
    length (or None) and ``readnoise`` a list of N values in e-.
    ``CRResult.clean`` and ``CRResult.crmask`` are lists of N arrays (one
    per member, in input order); ``CRResult.products`` holds any combined
    images (name -> 2-D float32 array, or a ``(data, var, mask)`` tuple),
    and ``CRResult.header`` extra header cards for them.

Methods outside crdask register the same way from their own module; a
workflow names such modules under ``plugins:`` (imported before the method
is looked up, in every process that runs tasks), and installed packages may
declare them as entry points of the group ``crdask.methods``.

Example
-------
>>> from crdask.cosmic.registry import get_method, method_names
>>> m = get_method("lacosmic")
>>> (m.kind, "sigclip" in m.params)
('frame', True)
>>> "lacosmic" in method_names("frame")
True
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from .params import ParamError, ParamSet

__all__ = ["Method", "CRResult", "register", "get_method", "method_names",
           "load_plugins", "KINDS"]

#: Method kinds: one exposure at a time, or a group of equivalent exposures.
KINDS = ("frame", "group")

_METHODS: dict = {}
_ENTRY_POINTS_LOADED = False


@dataclass
class CRResult:
    """What a detect function returns (see the module notes).

    clean : 2-D float32 array, or a list of them for a group method
    crmask : 2-D bool array, or a list of them for a group method
    products : dict, name -> combined image (group methods)
    header : dict, card name -> value or (value, comment), for the outputs
    """

    clean: object
    crmask: object
    products: dict = field(default_factory=dict)
    header: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A registered cosmic-ray method.

    Parameters
    ----------
    name : str
        Registered name, as written in workflows (``steps.cosmics.method``).
    kind : str
        ``'frame'`` or ``'group'``.
    params : ParamSet
        Every parameter, written once.
    detect : callable
        The detect function (conventions in the module notes).
    min_members : int
        Smallest group a group method can clean (2 for pair differencing,
        3 for Median-Minimum); 1 for frame methods.
    summary : str
        One line for ``--help`` and error messages.
    """

    name: str
    kind: str
    params: ParamSet
    detect: object
    min_members: int = 1
    summary: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name}: kind must be one of {KINDS}")
        if self.params.method != self.name:
            raise ValueError(f"method {self.name}: its ParamSet is named "
                             f"{self.params.method!r}")


def register(method, *, replace=False):
    """Add ``method`` (a :class:`Method`) to the registry and return it.

    Registering a different method under a name already taken raises
    ``ValueError`` unless ``replace``; registering the same object again is
    a no-op (a module imported twice).
    """
    old = _METHODS.get(method.name)
    if old is not None and old is not method and not replace:
        if (old.kind, old.params.names) != (method.kind, method.params.names) \
                or getattr(old.detect, "__qualname__", None) != \
                getattr(method.detect, "__qualname__", None):
            raise ValueError(f"a cosmic-ray method named {method.name!r} is already "
                             "registered")
    _METHODS[method.name] = method
    return method


def _load_builtin():
    # The built-in methods register themselves when their modules load;
    # ``crdask.cosmic`` imports every one of them.
    importlib.import_module("crdask.cosmic")


def _load_entry_points():
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points
    for ep in entry_points(group="crdask.methods"):
        ep.load()


def load_plugins(modules):
    """Import plugin modules (names such as ``'mypkg.mymethod'``) so that
    they register their methods. Raises ``ParamError`` naming a module that
    cannot be imported."""
    for name in modules or ():
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ParamError("plugins", f"cannot import {name!r}: {e}",
                             "importable module names") from None


def method_names(kind=None):
    """Registered method names (sorted), optionally of one kind."""
    _load_builtin()
    _load_entry_points()
    return sorted(n for n, m in _METHODS.items() if kind is None or m.kind == kind)


def get_method(name, kind=None):
    """The :class:`Method` registered as ``name``.

    Raises :class:`~crdask.cosmic.params.ParamError` (a ``ValueError``)
    naming the registered methods if there is none of that name (and kind).
    """
    _load_builtin()
    if name not in _METHODS:
        _load_entry_points()
    m = _METHODS.get(name) if isinstance(name, str) else None
    if m is None or (kind is not None and m.kind != kind):
        allowed = ", ".join(method_names(kind))
        what = f"{kind} method" if kind else "method"
        raise ParamError("method", f"{name!r} is not a registered {what}", allowed)
    return m
