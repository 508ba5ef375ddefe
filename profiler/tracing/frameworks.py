"""Where an inference begins and ends inside the frameworks people call.

A Hugging Face ``generate()`` runs the model's forward once per token and a
diffusers pipeline runs a text encoder, a UNet per step and a VAE: each call
of either is one inference, not one per forward inside it, and it has phases
(``prefill``, ``decode.<k>``, ``encode`` for sequence-to-sequence;
``encode_prompt``, ``denoise.<k>``, ``vae_decode``: the names ``phprof
trace`` writes, from ``phprof.models.phase_modules``).

While a session records, :class:`EntryPoints` wraps those methods:
``GenerationMixin.generate`` and every subclass's own ``generate`` (BLIP's,
Whisper's...), and every ``DiffusionPipeline`` subclass's ``__call__``. A
framework imported after the session started (``phprof run`` starts before
the program imports anything) is wrapped as its module is imported. The
wrappers call the session's ``enter(kind, obj)`` before and ``leave(token,
ok)`` after the call, and only the outermost call of a thread counts; with no
session recording they only call through. Everything is put back on
:meth:`EntryPoints.remove`.
"""
from __future__ import annotations

import functools
import importlib.abc
import sys
import threading

# module -> (class, method, kind): the methods that are one inference
TARGETS = {
    "transformers.generation.utils": ("GenerationMixin", "generate", "generate"),
    "diffusers.pipelines.pipeline_utils": ("DiffusionPipeline", "__call__", "pipeline"),
}
_MARK = "__phprof_wrapped__"


class EntryPoints:
    def __init__(self, enter, leave) -> None:
        self.enter, self.leave = enter, leave
        self._wrapped: list[tuple[type, str, object]] = []  # (class, method, what its __dict__ held)
        self._hooked: list[tuple[type, object]] = []  # (base, its own __init_subclass__ or None)
        self._finder: _AfterImport | None = None
        self._local = threading.local()
        self.missed: list[str] = []  # frameworks imported whose entry points were not found (another version)

    def install(self) -> None:
        waiting = {}
        for module_name, target in TARGETS.items():
            module = sys.modules.get(module_name)
            if module is not None:
                self._patch_quietly(module, target)
            else:
                waiting[module_name] = functools.partial(self._patch_quietly, target=target)
        if waiting:
            self._finder = _AfterImport(waiting)
            sys.meta_path.insert(0, self._finder)

    def remove(self) -> None:
        if self._finder is not None and self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        self._finder = None
        for cls, method, held in reversed(self._wrapped):
            setattr(cls, method, held)
        self._wrapped.clear()
        for base, own in self._hooked:
            if own is None:
                del base.__init_subclass__
            else:
                base.__init_subclass__ = own
        self._hooked.clear()

    def _patch_quietly(self, module, target) -> None:
        try:
            self._patch(module, *target)
        except AttributeError as e:  # another version of the framework: its calls stay plain module calls
            self.missed.append(f"{module.__name__}: {e}")

    def _patch(self, module, class_name: str, method: str, kind: str) -> None:
        base = getattr(module, class_name)
        for cls in [base, *_subclasses(base)]:
            if method in cls.__dict__:
                self._wrap(cls, method, kind)
        own = base.__dict__.get("__init_subclass__")
        wrap = self._wrap

        def init_subclass(cls, **kwargs):
            if own is not None:
                own.__func__(cls, **kwargs)
            else:
                super(base, cls).__init_subclass__(**kwargs)
            if method in cls.__dict__:
                wrap(cls, method, kind)

        base.__init_subclass__ = classmethod(init_subclass)
        self._hooked.append((base, own))

    def _wrap(self, cls: type, method: str, kind: str) -> None:
        held = cls.__dict__[method]
        if getattr(held, _MARK, False):
            return
        original = held
        local, enter, leave = self._local, self.enter, self.leave

        @functools.wraps(original)
        def wrapper(obj, *args, **kwargs):
            if getattr(local, "inside", False):  # a call inside another one (Whisper's generate -> super's)
                return original(obj, *args, **kwargs)
            local.inside = True
            try:
                token = enter(kind, obj)
            except BaseException:
                local.inside = False
                raise
            ok = False
            try:
                out = original(obj, *args, **kwargs)
                ok = True
            finally:
                local.inside = False
                leave(token, ok)
            return out

        setattr(wrapper, _MARK, True)
        setattr(cls, method, wrapper)
        self._wrapped.append((cls, method, held))


def _subclasses(cls: type) -> list[type]:
    out, todo = [], list(cls.__subclasses__())
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c.__subclasses__())
    return out


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a callback on a module as soon as it has been imported."""

    def __init__(self, callbacks: dict) -> None:
        self.callbacks = callbacks

    def find_spec(self, fullname, path, target=None):
        callback = self.callbacks.get(fullname)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _ThenCall(spec.loader, callback)
        return spec


class _ThenCall(importlib.abc.Loader):
    """A module's own loader, then the callback; the module keeps its own loader."""

    def __init__(self, loader, callback) -> None:
        self.loader, self.callback = loader, callback

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        self.callback(module)

    def __getattr__(self, name):
        return getattr(self.loader, name)
