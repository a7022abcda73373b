"""Read PyTorch's legacy (pre-1.6, non-zip) `.pth` state dicts with numpy alone.

Torch is not a dependency of this project, and `torch.load` on an untrusted file runs whatever
the pickle asks for. This reader lets the pickle name only what a state dict is made of.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from pathlib import Path

import numpy as np

_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_PROTOCOL = 1001
_STORAGES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class _Storage:
    """A storage type named by the pickle: a name looked up in _STORAGES, never a callable."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *_requires_grad_hooks_metadata):
    """Stands in for torch._utils._rebuild_tensor_v2: the bytes come after the pickle, so defer."""
    return ("tensor", storage, int(offset), tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _Storage(name)  # a fresh object: a hostile BUILD can change only its own copy
        raise pickle.UnpicklingError(f"refuses global {module}.{name} (not part of a state dict)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.100}")
        _, kind, key, _location, numel, view = pid
        offset = 0 if view is None else int(view[1])  # an old storage view: (view key, offset, size)
        return (str(key), np.dtype(_STORAGES[kind.name]), int(numel), offset)


def read_torch_state_dict(path: Path | str) -> dict[str, np.ndarray]:
    """Tensor name -> numpy array (a C-contiguous copy) from a legacy `.pth` file."""
    path = Path(path)
    try:
        f = io.BytesIO(path.read_bytes())
        if _StateDictUnpickler(f).load() != _MAGIC or _StateDictUnpickler(f).load() != _PROTOCOL:
            raise ValueError("not PyTorch's legacy serialisation (wrong magic number or protocol version)")
        if _StateDictUnpickler(f).load().get("little_endian") is not True:
            raise ValueError("was not written little-endian")
        state, keys = _StateDictUnpickler(f).load(), _StateDictUnpickler(f).load()
        tensors = {name: t for name, t in state.items() if isinstance(t, tuple) and t[0] == "tensor"}
        if len(tensors) != len(state) or not all(isinstance(name, str) for name in state):
            raise ValueError("holds something other than named tensors")
        refs = {ref[0]: ref for _, ref, *_ in tensors.values()}
        storages = {}
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            _, dtype, numel, _ = refs[key]
            data = f.read(count * dtype.itemsize)
            if count != numel or len(data) != count * dtype.itemsize:
                raise ValueError(f"storage {key} is truncated or has the wrong size")
            storages[key] = np.frombuffer(data, dtype)
        out = {}
        for name, (_, (key, _, _, view_offset), offset, size, stride) in tensors.items():
            base, start = storages[key], view_offset + offset
            last = start + sum((n - 1) * s for n, s in zip(size, stride))
            if min(size + stride + (start,), default=0) < 0 or (0 not in size and last >= len(base)):
                raise ValueError(f"tensor {name} lies outside its storage")
            out[name] = np.lib.stride_tricks.as_strided(
                base[start:], size, [s * base.itemsize for s in stride], writeable=False
            ).copy()
        return out
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except (
        OSError,
        pickle.UnpicklingError,
        EOFError,
        struct.error,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        MemoryError,
    ) as exc:
        raise ValueError(f"{path}: not a readable PyTorch state dict ({type(exc).__name__}: {exc})") from None
