"""Every output behind one small interface, and the one registry that picks it.

A *view* is what a command shows: a :class:`~phprof.render.views.Report` (one
trace's results and roll-ups), a :class:`~phprof.render.views.Flamegraph`
(one trace's frames, or its timeline), a
:class:`~phprof.attribution.compare.Comparison` (runs side by side), a
:class:`~phprof.tracing.session.TraceSummary` (what a recording measured). Each says
which it is in its ``VIEW`` attribute, so this module need not import them.

A :class:`Renderer` turns one kind of view into one format: it has a ``name``
(the format, e.g. ``"markdown"``), the file-name endings that choose it
(``suffixes``), the options it takes with their defaults (``options``), and
:meth:`Renderer.render`. :func:`render` is the one entry point every command
uses: a format name gives back the text, a file name writes the file.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import PhprofError


class RenderError(PhprofError):
    """A format that does not exist for the view, or a file that cannot be written."""


class Renderer:
    """One format of one kind of view (see the module's docstring)."""

    view: str = ""  # the VIEW of what it renders
    name: str = ""  # the format
    suffixes: tuple[str, ...] = ()  # file name endings that choose it
    options: dict = {}  # the options it takes, with their defaults

    def __init__(self, **options) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            raise TypeError(f"the {self.view} {self.name} renderer takes no option {', '.join(sorted(unknown))}")
        for key, default in self.options.items():
            setattr(self, key, options.get(key, default))

    def render(self, view) -> str:
        raise NotImplementedError


RENDERERS: list[type[Renderer]] = []


def register(cls: type[Renderer]) -> type[Renderer]:
    """Class decorator: adds a renderer to the registry."""
    RENDERERS.append(cls)
    return cls


def renderers(view_kind: str) -> list[type[Renderer]]:
    """The renderers of one kind of view, in registration order."""
    _load()
    return [r for r in RENDERERS if r.view == view_kind]


def format_names(view_kind: str) -> list[str]:
    return [r.name for r in renderers(view_kind)]


def format_of(view_kind: str, path: str | os.PathLike) -> str:
    """The format a file name asks for (its longest matching ending); RenderError naming the known ones."""
    name = Path(path).name.lower()
    match = [(len(s), r.name) for r in renderers(view_kind) for s in r.suffixes if name.endswith(s)]
    if not match:
        raise RenderError(f"cannot tell the format of {Path(path).name!r}: {_known(view_kind)}")
    return max(match)[1]


def _known(view_kind: str) -> str:
    return "known formats: " + "; ".join(f"{r.name} ({', '.join(r.suffixes)})" for r in renderers(view_kind))


def render(view, fmt_or_path: str | os.PathLike, fmt: str | None = None, **options) -> str | Path:
    """Renders a view. ``fmt_or_path``: a format name of the view (``"text"``,
    ``"html"``...): the text is returned; anything else is a file to write (its
    name chooses the format unless ``fmt`` is given): its Path is returned.
    ``options`` go to the renderer; those another format of the view takes and
    this one does not are ignored (``top`` means nothing to JSON, which holds
    every row), any other is a TypeError."""
    kind = getattr(view, "VIEW", None)
    if kind is None:
        raise TypeError(f"nothing renders a {type(view).__name__}")
    known = {r.name: r for r in renderers(kind)}
    path = None
    if fmt is None and not isinstance(fmt_or_path, os.PathLike) and str(fmt_or_path) in known:
        fmt = str(fmt_or_path)
    else:
        path = Path(fmt_or_path)
        fmt = fmt or format_of(kind, path)
    if fmt not in known:
        raise RenderError(f"no {fmt!r} format for a {kind}: {_known(kind)}")
    cls = known[fmt]
    taken = {k for r in known.values() for k in r.options}
    unknown = set(options) - taken
    if unknown:
        raise TypeError(f"no {kind} format takes the option {', '.join(sorted(unknown))}")
    if path is not None and not path.parent.is_dir():
        raise RenderError(f"cannot write {path}: the folder {path.parent} does not exist")
    text = cls(**{k: v for k, v in options.items() if k in cls.options}).render(view)
    if path is None:
        return text
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise RenderError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def _load() -> None:
    """Imports the modules that register renderers (once)."""
    from . import calibration, compare, flamegraph, formats, ranks, report, study, summary  # noqa: F401
