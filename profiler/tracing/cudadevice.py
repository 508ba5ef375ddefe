"""Which NVML GPU measures a CUDA device.

NVML numbers the machine's boards in its own order and ignores
``CUDA_VISIBLE_DEVICES``: under ``CUDA_VISIBLE_DEVICES=3`` torch's ``cuda:0``
is NVML's GPU 3, and NVML's GPU 0 is another board, whose power would go to
the model's layers. torch gives each CUDA device the UUID NVML reports (less
its ``GPU-`` prefix) and its place on the PCI bus; the device is matched on
the UUID, else on its PCI domain, bus and device, and a device that matches
none of NVML's GPUs is refused.

A MIG slice (``NVIDIA A100-SXM4-40GB MIG 1g.5gb``) is refused too: NVML's
energy and power are the whole parent GPU's, the other slices' work included,
so they cannot be given to the slice's layers.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import PhprofError
from ..sources import NvmlSource

_MIG_NAME = re.compile(r"\bMIG \d+g\.\d+gb\b", re.IGNORECASE)


class DeviceError(PhprofError):
    """A CUDA device phprof cannot measure: no NVML GPU is it, or it is a MIG slice."""


@dataclass(frozen=True)
class CudaDevice:
    """What torch says of a CUDA device."""

    device: str  # cuda:N
    name: str
    uuid: str  # as torch prints it (no GPU- prefix); "" when torch gives none
    pci: tuple[int, int, int] | None  # (domain, bus, device), None when torch gives none

    @property
    def mig(self) -> bool:
        return bool(_MIG_NAME.search(self.name)) or self.uuid.lower().startswith("mig-")


def cuda_device(device: str) -> CudaDevice:
    """torch's view of ``cuda`` / ``cuda:N`` (an ordinal under CUDA_VISIBLE_DEVICES)."""
    import torch

    props = torch.cuda.get_device_properties(torch.device(device).index or 0)
    uuid = str(getattr(props, "uuid", "") or "")
    pci = None
    if all(hasattr(props, f"pci_{k}_id") for k in ("domain", "bus", "device")):
        pci = (int(props.pci_domain_id), int(props.pci_bus_id), int(props.pci_device_id))
    return CudaDevice(device, str(props.name), uuid, pci)


def _uuid_key(uuid: str) -> str:
    """A UUID as NVML and torch both write it: lower case, no GPU-/MIG- prefix; "" for none."""
    key = uuid.strip().lower()
    for prefix in ("gpu-", "mig-"):
        key = key.removeprefix(prefix)
    return "" if not key.strip("0-") else key


def nvml_match(cuda: CudaDevice, devices, unreadable=()) -> tuple[dict, str]:
    """The NVML GPU (one of ``devices``, ``NvmlSource.probe().devices``) that is this CUDA
    device, and what matched: ``uuid`` or ``pci``. Raises :class:`DeviceError` for none."""
    key = _uuid_key(cuda.uuid)
    if key:
        for d in devices:
            if _uuid_key(d.get("uuid") or "") == key:
                return d, "uuid"
    if cuda.pci is not None:
        for d in devices:
            if d.get("pci") is not None and tuple(d["pci"]) == cuda.pci:
                return d, "pci"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = ", ".join(f"GPU {d['index']} {d.get('uuid') or '(no UUID)'}" for d in devices) or "none readable"
    cant = "; ".join(f"GPU {d['index']} cannot be read ({d['error']})" for d in unreadable)
    which = (f"UUID {cuda.uuid}" if key else "no UUID") + (
        f", PCI {cuda.pci[0]:04x}:{cuda.pci[1]:02x}:{cuda.pci[2]:02x}" if cuda.pci else ", no PCI bus id")
    raise DeviceError(
        f"{cuda.device} ({cuda.name}, {which}{f', CUDA_VISIBLE_DEVICES={visible}' if visible is not None else ''}) is "
        f"none of the GPUs NVML sees ({seen}{'; ' + cant if cant else ''}): phprof will not measure another board "
        "in its place (--source none records time only)")


def measuring_gpu(device: str, source: str) -> tuple[int | None, dict]:
    """The NVML index that measures ``device`` with power source ``source``, and what the
    trace's meta records of the match; (None, {}) off a GPU, without NVML (``open_source``
    then says why) or with another source."""
    if not device.startswith("cuda") or source not in ("auto", "nvml"):
        return None, {}
    cuda = cuda_device(device)
    if cuda.mig:
        raise DeviceError(
            f"{device} is a MIG slice ({cuda.name}): NVML's energy and power are the whole parent GPU's, the other "
            "slices' work included, so phprof cannot give them to this slice's layers; --source none records "
            "time only")
    found = NvmlSource.probe()
    if not found.available:
        return None, {}
    d, how = nvml_match(cuda, found.devices, found.unreadable)
    return d["index"], {"cuda_device": device, "cuda_name": cuda.name, "cuda_uuid": cuda.uuid,
                        "cuda_pci": list(cuda.pci) if cuda.pci else None,
                        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "nvml_index": d["index"], "nvml_uuid": d["uuid"], "matched_by": how}
