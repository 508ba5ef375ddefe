"""Scopes the tracer opens around the model's work, as torch.profiler annotations.

- Every module's forward is a scope named by its path in ``named_modules()``
  (``transformer.h.3.attn.c_attn``); the root module is named by its class.
- Each inference is a scope ``phprof.inference.<i>``.
- Generation and diffusion steps are scopes ``phprof.phase.<name>``: ``prefill``
  then ``decode.<k>`` for decoder-only generation, ``encode`` then
  ``decode.<k>`` for sequence-to-sequence, ``encode_prompt``, ``denoise.<k>``
  and ``vae_decode`` for diffusion, ``forward`` for a single forward pass.

Names starting with ``phprof.`` are not module paths:
``phprof.store.schema.is_module_scope`` tells the two apart when stacks are built.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.autograd.profiler import record_function

from ..store.schema import INFERENCE_PREFIX, PHASE_PREFIX


class _Scoped:
    """Opens a record_function scope in a forward pre-hook and closes it in the
    forward hook; a per-module stack keeps re-entrant calls paired."""

    def __init__(self) -> None:
        self._open: dict[int, list[record_function]] = {}
        self._handles: list = []

    def _hook(self, module: torch.nn.Module, name_of_call) -> None:
        key = id(module)
        stack = self._open.setdefault(key, [])

        def pre(mod, args):
            rf = record_function(name_of_call())
            rf.__enter__()
            stack.append(rf)

        def post(mod, args, output):
            if stack:
                stack.pop().__exit__(None, None, None)

        self._handles.append(module.register_forward_pre_hook(pre))
        self._handles.append(module.register_forward_hook(post, always_call=True))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for stack in self._open.values():  # scopes left open by an exception
            while stack:
                stack.pop().__exit__(None, None, None)


class ModuleScopes(_Scoped):
    """A scope per module call, named by the module's path; counts the calls."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.modules = [(path or type(model).__name__, module) for path, module in model.named_modules()]
        self.calls = [0] * len(self.modules)
        for i, (name, module) in enumerate(self.modules):
            self._hook(module, lambda name=name, i=i: self._called(name, i))

    def _called(self, name: str, i: int) -> str:
        self.calls[i] += 1
        return name


class PhaseScopes(_Scoped):
    """Phase scopes from the calls of the task's phase modules (see
    ``phprof.models.phase_modules``): ``{"step": m}`` numbers the calls of m
    (``prefill`` then ``decode.<k>``, or ``decode.<k>`` from 0 after an
    ``encoder``), other keys name a phase per call."""

    NAMES = {"encoder": "encode", "text_encoder": "encode_prompt", "vae_decode": "vae_decode"}

    def __init__(self, modules: dict[str, torch.nn.Module]) -> None:
        super().__init__()
        self._counts: dict[str, int] = {}
        seq2seq = "encoder" in modules
        for key, module in modules.items():
            self._hook(module, lambda key=key, seq2seq=seq2seq: self._name(key, seq2seq))

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


@contextmanager
def inference_scope(index: int):
    with record_function(f"{INFERENCE_PREFIX}{index}"):
        yield
