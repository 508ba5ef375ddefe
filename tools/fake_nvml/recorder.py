"""Which NVML calls a tool makes through pynvml, and how each was answered.

Used to keep the fake complete for the tools phprof is compared with (CodeCarbon, Zeus): run
the tool inside :func:`recording_pynvml` and every ``pynvml.nvml*`` function it calls is
logged once per distinct call (outermost calls only: pynvml's own helpers are folded into the
call that used them), with the C entry points it resolved and what they returned. The calls
are kept in a form that can be replayed without the tool (:func:`replay`): device handles
become ``{"device": index}``, ctypes values their plain value.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Call:
    call: str  # the pynvml function, e.g. "nvmlDeviceGetMemoryInfo"
    args: list  # JSON-able; {"device": i} for a handle
    symbols: list[str] = field(default_factory=list)  # C entry points it resolved, in order
    returns: list = field(default_factory=list)  # what each returned: an NVML code, or "missing"

    def key(self) -> tuple:
        return self.call, repr(self.args)

    def as_dict(self) -> dict:
        return {"call": self.call, "args": self.args, "symbols": self.symbols}


class Recording:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._seen: dict[tuple, Call] = {}

    def distinct(self) -> list[Call]:
        return list(self._seen.values())

    def failed(self) -> list[Call]:
        """Calls not answered: a C entry point was missing, or the last one returned an error
        (a list's first call returning INSUFFICIENT_SIZE with the count is NVML's protocol)."""
        return [c for c in self.distinct() if "missing" in c.returns or (c.returns and c.returns[-1] != 0)]


def _plain(value, handles: dict[int, int]):
    import ctypes

    if isinstance(value, ctypes._Pointer) or type(value).__name__ == "LP_struct_c_nvmlDevice_t":
        return {"device": handles.get(ctypes.cast(value, ctypes.c_void_p).value, "?")}
    if isinstance(value, (list, tuple)):
        return [_plain(v, handles) for v in value]
    if isinstance(value, ctypes._SimpleCData):
        return value.value
    return value


@contextlib.contextmanager
def recording_pynvml() -> Iterator[Recording]:
    """Logs every pynvml call made while inside (all threads), then restores pynvml."""
    import ctypes

    import pynvml

    rec = Recording()
    handles: dict[int, int] = {}
    local = threading.local()
    originals = {name: fn for name, fn in vars(pynvml).items() if name.startswith("nvml") and callable(fn)
                 and not isinstance(fn, type)}
    get_pointer = pynvml._nvmlGetFunctionPointer

    def wrap(name, fn):
        def logged(*args, **kwargs):
            if getattr(local, "call", None) is not None:  # inside another pynvml call
                return fn(*args, **kwargs)
            call = Call(name, _plain(list(args) + [v for _, v in sorted(kwargs.items())], handles))
            local.call = call
            try:
                result = fn(*args, **kwargs)
                if name.startswith("nvmlDeviceGetHandleByIndex"):
                    handles[ctypes.cast(result, ctypes.c_void_p).value] = int(args[0])
                return result
            finally:
                local.call = None
                rec.calls.append(call)
                rec._seen.setdefault(call.key(), call)
        return logged

    def pointer(name):
        if name == "nvmlErrorString":  # pynvml sets its restype: hand over the real one
            return get_pointer(name)
        call = getattr(local, "call", None)
        try:
            fn = get_pointer(name)
        except pynvml.NVMLError:
            if call is not None:
                call.symbols.append(name)
                call.returns.append("missing")
            raise

        def answered(*args):
            rc = fn(*args)
            c = getattr(local, "call", None)
            if c is not None:
                c.symbols.append(name)
                c.returns.append(int(rc))
            return rc
        return answered

    try:
        for name, fn in originals.items():
            setattr(pynvml, name, wrap(name, fn))
        pynvml._nvmlGetFunctionPointer = pointer
        yield rec
    finally:
        for name, fn in originals.items():
            setattr(pynvml, name, fn)
        pynvml._nvmlGetFunctionPointer = get_pointer


def replay(entry: dict, handles: list):
    """Makes one recorded call again through pynvml; ``handles[i]`` is device i's handle."""
    import pynvml

    def real(v):
        if isinstance(v, dict) and set(v) == {"device"}:
            return handles[v["device"]]
        if isinstance(v, list):
            return [tuple(x) if isinstance(x, list) else real(x) for x in v]
        return v

    return getattr(pynvml, entry["call"])(*[real(a) for a in entry["args"]])
