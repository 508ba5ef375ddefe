"""Scopes a recording session opens around the work, as torch.profiler annotations.

- Every ``torch.nn.Module`` that runs while a session records is a scope (one
  global forward hook, :class:`ModuleScopes`), named by its path under its root
  module: ``transformer.h.3.attn.c_attn``; the root itself is named by its
  class (``GPT2LMHeadModel``). Nothing needs naming: the first time a module
  runs, its root is found (the outermost module reachable from the calls on the
  stack, or from the object whose method is running, a pipeline say, that
  contains it) and every module under that root is named at once. A root
  watched with a name (``watch(model, "encoder")``), and every root found after
  the first one, has its paths prefixed by that name (``encoder.layer.0``;
  found roots are named by the variable or attribute that holds them), so that
  several models in one run keep apart. A module made on the fly inside
  another's forward (``nn.ReLU()(x)``) is part of the scope that called it.
- Each inference is a scope ``phprof.inference.<i>`` (opened by the session).
- Generation and diffusion steps are scopes ``phprof.phase.<name>``
  (:class:`PhaseScopes`): ``prefill`` then ``decode.<k>`` for decoder-only
  generation, ``encode`` then ``decode.<k>`` for sequence-to-sequence,
  ``encode_prompt``, ``denoise.<k>`` and ``vae_decode`` for diffusion,
  ``forward`` for a single forward pass.

Names starting with ``phprof.`` are not module paths:
``phprof.store.schema.is_module_scope`` tells the two apart when stacks are
built, and :meth:`ModuleScopes.is_scope` tells a module's scope from any other
annotation a program opens itself.
"""
from __future__ import annotations

import sys
import threading
import weakref
from dataclasses import dataclass

import torch
from torch.autograd.profiler import record_function
from torch.nn.modules import module as _module

from ..store.schema import PHASE_PREFIX


@dataclass
class Root:
    """A root module and the prefix of its modules' names ("" : none)."""

    module: torch.nn.Module
    prefix: str

    @property
    def name(self) -> str:
        """The root's own scope name: its prefix, else its class."""
        return self.prefix or type(self.module).__name__

    def path_of(self, path: str) -> str:
        if not path:
            return self.name
        return f"{self.prefix}.{path}" if self.prefix else path


class ModuleScopes:
    """A scope per module call, for every module that runs while installed.

    ``on_outermost(start)`` is called as a thread's outermost module call
    begins (``True``, before its scope opens) and ends (``False``, after its
    scope closed), or ``None`` when an interrupt unwound it: the session makes
    each outermost call an inference when the program marks none. Calls are
    counted per module."""

    def __init__(self, on_outermost=None) -> None:
        self.roots: list[Root] = []
        self.on_outermost = on_outermost
        self._entries: dict[int, list] = {}  # id(module) -> [scope name, calls]
        self._issued: set[str] = set()  # every name a module scope has had
        self._local = threading.local()  # per thread: the open scopes [(record_function, module, frame)]
        self._handles: list = []
        self.dynamic = 0  # modules made on the fly, part of their caller's scope
        self.check_stale = False  # set after an interrupt: the next call first closes the scopes it unwound

    # -- naming ----------------------------------------------------------------------------
    def watch(self, module: torch.nn.Module, name: str | None = None) -> Root:
        """Names ``module`` and everything under it (``name``: the prefix of their
        paths; None: unprefixed if it is the first root, else its class name).
        A module already named keeps its name."""
        for root in self.roots:
            if root.module is module:
                if name is not None and name != root.prefix:
                    raise ValueError(f"{type(module).__name__} is already named {root.name!r} in this profile; "
                                     "watch() a model with its name before it first runs")
                return root
        if name is None and self.roots:
            name = type(module).__name__
        prefix = self._unique(name or "", module)
        root = Root(module, prefix)
        self.roots.append(root)
        for path, m in module.named_modules():
            if id(m) not in self._entries:
                self._name(m, root.path_of(path))
        return root

    def _unique(self, prefix: str, module) -> str:
        """``prefix``, or ``prefix#2``... where its names would clash with names given before."""
        taken = {r.prefix for r in self.roots}
        candidate, k = prefix, 1
        while candidate in taken or (candidate and any(
                n == candidate or n.startswith(candidate + ".") for n in self._issued)):
            k += 1
            candidate = f"{prefix}#{k}"
        return candidate

    def _name(self, module, name: str) -> list:
        entry = self._entries[id(module)] = [name, 0]
        self._issued.add(name)
        return entry

    def _discover(self, module: torch.nn.Module, frame) -> list:
        """The name of a module seen for the first time (see the module's docstring)."""
        stack = self._stack()
        if stack:
            caller = stack[-1][1]
            if not any(m is module for m in caller.modules()):
                # made on the fly inside the caller's forward (``nn.ReLU()(x)``): part of the caller's scope,
                # remembered until it is freed
                self.dynamic += 1
                entry = self._entries[id(module)] = [None, 0]
                weakref.finalize(module, self._entries.pop, id(module), None)
                return entry
        for root in self.roots:  # a module added under a known root after it was named
            if any(m is module for m in root.module.modules()):
                for path, m in root.module.named_modules():
                    if id(m) not in self._entries:
                        self._name(m, root.path_of(path))
                return self._entries[id(module)]
        name, container = _find_root(module, frame)
        self.watch(container if container is not None else module, name if self.roots else None)
        return self._entries[id(module)]

    def is_scope(self, name: str) -> bool:
        """Whether an annotation name is a module scope this session opened."""
        return name in self._issued

    def module_rows(self) -> list[tuple[str, torch.nn.Module, int]]:
        """(name, module, calls) of every module under every root, roots in the order
        they were named, each in ``named_modules`` order."""
        out = []
        seen = set()
        for root in self.roots:
            for path, m in root.module.named_modules():
                if id(m) in seen:
                    continue
                seen.add(id(m))
                entry = self._entries.get(id(m))
                out.append((entry[0] if entry else root.path_of(path), m, entry[1] if entry else 0))
        return out

    # -- hooks -----------------------------------------------------------------------------
    def _stack(self) -> list:
        try:
            return self._local.stack
        except AttributeError:
            self._local.stack = []
            return self._local.stack

    def _pre(self, module, args) -> None:
        entry = self._entries.get(id(module))
        if entry is None:
            entry = self._discover(module, sys._getframe(1))
        if entry[0] is None:
            return  # made on the fly: part of its caller
        if self.check_stale:
            self.check_stale = False
            self.drop_stale()
        stack = self._stack()
        if not stack and self.on_outermost is not None:
            self.on_outermost(True)
        entry[1] += 1
        rf = record_function(entry[0])
        rf.__enter__()
        stack.append((rf, module, sys._getframe(1)))  # the frame of this call, to tell a stale entry later

    def _post(self, module, args, output) -> None:
        stack = self._stack()
        for depth in range(len(stack) - 1, -1, -1):
            if stack[depth][1] is module:
                break
        else:
            return  # a call that began before the hooks were installed
        while len(stack) > depth:  # entries above it: calls an exception took out without their hooks
            stack.pop()[0].__exit__(None, None, None)
        if not stack and self.on_outermost is not None:
            self.on_outermost(False)

    def drop_stale(self) -> None:
        """Closes the scopes of calls that are no longer running (an interrupt unwound
        them: torch runs no forward hook for a KeyboardInterrupt)."""
        stack = self._stack()
        live = set()
        f = sys._getframe()
        while f is not None:
            live.add(id(f))
            f = f.f_back
        dropped = False
        while stack and id(stack[-1][2]) not in live:
            stack.pop()[0].__exit__(None, None, None)
            dropped = True
        if dropped and not stack and self.on_outermost is not None:
            self.on_outermost(None)  # the outermost call itself was unwound: it did not end

    def install(self) -> None:
        self._handles = [_module.register_module_forward_pre_hook(self._pre),
                         _module.register_module_forward_hook(self._post, always_call=True)]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        stack = self._stack()
        while stack:  # scopes left open by an interrupt (only this thread's can be closed here)
            stack.pop()[0].__exit__(None, None, None)


def _find_root(module: torch.nn.Module, frame) -> tuple[str | None, torch.nn.Module | None]:
    """The outermost module that holds ``module``, among those the calls on the
    stack can reach (their locals, and the modules an object whose method is
    running holds as attributes), with the name it is held by; (None, None)
    when none holds it but itself."""
    candidates: dict[int, tuple[str | None, torch.nn.Module]] = {}
    while frame is not None:
        for var, value in frame.f_locals.items():
            if isinstance(value, torch.nn.Module):
                if value is not module:
                    candidates.setdefault(id(value), (None if var == "self" else var, value))
            elif var == "self" and hasattr(value, "__dict__"):  # a pipeline's method, say
                for attr, held in vars(value).items():
                    if isinstance(held, torch.nn.Module):
                        candidates.setdefault(id(held), (attr, held))
        frame = frame.f_back
    holders = [(name, c) for name, c in candidates.values() if any(m is module for m in c.modules())]
    if not holders:
        return None, None
    # the outermost: the holder with the most modules under it
    name, root = max(holders, key=lambda h: sum(1 for _ in h[1].modules()))
    return name, root


class PhaseScopes:
    """Phase scopes from the calls of phase modules (see
    ``phprof.models.phase_modules``): ``{"step": m}`` numbers the calls of m
    (``prefill`` then ``decode.<k>``, or ``decode.<k>`` from 0 after an
    ``encoder``), other keys name a phase per call. A forward pre-hook opens
    the scope, the forward hook closes it; a per-module stack keeps re-entrant
    calls paired."""

    NAMES = {"encoder": "encode", "text_encoder": "encode_prompt", "vae_decode": "vae_decode"}

    def __init__(self, modules: dict[str, torch.nn.Module]) -> None:
        self._open: dict[int, list[record_function]] = {}
        self._handles: list = []
        self._counts: dict[str, int] = {}
        seq2seq = "encoder" in modules
        for key, module in modules.items():
            self._hook(module, lambda key=key, seq2seq=seq2seq: self._name(key, seq2seq))

    def _hook(self, module: torch.nn.Module, name_of_call) -> None:
        stack = self._open.setdefault(id(module), [])

        def pre(mod, args):
            rf = record_function(name_of_call())
            rf.__enter__()
            stack.append(rf)

        def post(mod, args, output):
            if stack:
                stack.pop().__exit__(None, None, None)

        self._handles.append(module.register_forward_pre_hook(pre))
        self._handles.append(module.register_forward_hook(post, always_call=True))

    def _name(self, key: str, seq2seq: bool) -> str:
        k = self._counts.get(key, 0)
        self._counts[key] = k + 1
        if key == "step":
            return PHASE_PREFIX + (f"decode.{k}" if seq2seq else ("prefill" if k == 0 else f"decode.{k}"))
        if key == "denoise":
            return f"{PHASE_PREFIX}denoise.{k}"
        name = self.NAMES.get(key, key)
        return PHASE_PREFIX + (name if k == 0 else f"{name}.{k}")

    def new_inference(self) -> None:
        self._counts.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for stack in self._open.values():  # scopes left open by an exception
            while stack:
                stack.pop().__exit__(None, None, None)
