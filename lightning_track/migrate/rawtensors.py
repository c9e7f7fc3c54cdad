"""Legacy tensors by reference, and Lightning checkpoints written by copying their bytes.

Converting a checkpoint does not change a single tensor byte: only the container changes (a
``torch.save`` zip or a safetensors file in, a ``torch.save`` zip with a Lightning dict out). So
instead of ``torch.load`` (read every byte into memory) and ``torch.save`` (CRC32 every byte in
torch's slow zip writer, write it again), the legacy file's pickle is read with every tensor kept
as a :class:`RawTensor` placeholder that says where its bytes are, and
:func:`~.rawwrite.write_checkpoint` pickles the new dict with the same placeholders and copies the
bytes file-to-file in the kernel (``os.copy_file_range``), reusing the source zip's CRC32s. The
result is a standard ``torch.save`` file: same records, same 64-byte alignment, loaded by
``torch.load`` and Lightning like any other. torch's globals are kept as names
(:class:`TorchGlobal`), so none of this imports torch (~2 s saved per process).

Anything this reader does not fully understand -- a non-zip (pre-1.6) torch file, a compressed
record, a pickle that names anything besides the plain tensor/storage/container globals, a dtype
without a storage class, a file that is cut short -- raises :class:`RawUnsupported`, and the
caller takes the ``torch.load``/``torch.save`` path, which also words the errors for bad files.
The allow-list is narrower than ``torch.load(weights_only=True)``'s, so nothing loads here that
safe loading would refuse.
"""

from __future__ import annotations

import codecs
import collections
import errno
import importlib
import io
import json
import math
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

__all__ = ["RawUnsupported", "TorchGlobal", "RawCall", "RawTensor", "RawStorage", "read_torch_file",
           "read_safetensors", "contains_raw", "materialize"]

# The only globals a checkpoint may name here (torch.load(weights_only=True) allows more). They are
# kept as names, not imported: converting a checkpoint needs no torch at all (~2 s of imports saved).
_TENSOR_REBUILDERS = {"_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter", "_rebuild_parameter_with_state"}
# torch.save's storage classes (``torch.FloatStorage`` ...) -> (element dtype name, bytes per element)
_STORAGES = {"DoubleStorage": ("float64", 8), "FloatStorage": ("float32", 4), "HalfStorage": ("float16", 2),
             "BFloat16Storage": ("bfloat16", 2), "LongStorage": ("int64", 8), "IntStorage": ("int32", 4),
             "ShortStorage": ("int16", 2), "CharStorage": ("int8", 1), "ByteStorage": ("uint8", 1),
             "BoolStorage": ("bool", 1), "ComplexFloatStorage": ("complex64", 8),
             "ComplexDoubleStorage": ("complex128", 16)}
_DTYPES = {"float64", "double", "float32", "float", "float16", "half", "bfloat16", "int64", "long", "int32", "int",
           "int16", "short", "int8", "uint8", "bool", "complex64", "cfloat", "complex128", "cdouble"}
_TORCH_NAMES = _DTYPES | set(_STORAGES) | {"Size", "device"}
# safetensors dtype -> torch storage class name
_SAFETENSORS_DTYPES = {"F64": "DoubleStorage", "F32": "FloatStorage", "F16": "HalfStorage", "BF16": "BFloat16Storage",
                       "I64": "LongStorage", "I32": "IntStorage", "I16": "ShortStorage", "I8": "CharStorage",
                       "U8": "ByteStorage", "BOOL": "BoolStorage"}


class RawUnsupported(Exception):
    """This file is not one the byte-copying path handles; use torch.load/torch.save instead."""


@dataclass(frozen=True)
class TorchGlobal:
    """A global a pickle names (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``), by name."""

    module: str
    name: str

    def __call__(self, *args: Any) -> RawCall:  # what unpickling a call of it gives
        return (RawTensor if self.name in _TENSOR_REBUILDERS else RawCall)(self, args)

    def resolve(self) -> Any:
        return getattr(importlib.import_module(self.module), self.name)


class RawCall:
    """A pickled call kept as it is (``torch.Size((2, 3))``), to be pickled again the same way."""

    __slots__ = ("func", "args")

    def __init__(self, func: TorchGlobal, args: tuple[Any, ...]) -> None:
        self.func = func
        self.args = args

    def __setstate__(self, state: Any) -> None:  # a pickle BUILD on it: more than a plain call
        raise RawUnsupported(f"{self.func.module}.{self.func.name} with extra state")


class RawTensor(RawCall):
    """A tensor as the call that rebuilds it (``torch._utils._rebuild_*``), its storage a :class:`RawStorage`."""

    __slots__ = ()


@dataclass(eq=False)
class RawStorage:
    """A storage's bytes in a source file: ``length`` bytes at ``offset``, with the zip CRC32 if known."""

    path: str
    offset: int
    length: int
    storage_type: TorchGlobal
    numel: int
    crc32: int | None = None


def materialize(obj: Any) -> Any:
    """``obj`` with every raw value read into real torch objects (for the ``torch.save`` fallback)."""
    if isinstance(obj, TorchGlobal):
        return obj.resolve()
    if isinstance(obj, RawCall):
        return materialize(obj.func)(*(materialize(arg) for arg in obj.args))
    if isinstance(obj, RawStorage):
        import torch

        with open(obj.path, "rb") as handle:
            handle.seek(obj.offset)
            data = bytearray(handle.read(obj.length))
        if len(data) != obj.length:
            raise OSError(errno.EIO, f"{obj.path}: ended {obj.length - len(data)} bytes early")
        untyped = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else torch.UntypedStorage(0)
        dtype = getattr(torch, _STORAGES[obj.storage_type.name][0])
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, materialize(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: materialize(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [materialize(v) for v in obj]
    if type(obj) is tuple:
        return tuple(materialize(v) for v in obj)
    return obj


def contains_raw(obj: Any) -> bool:
    """Whether ``obj`` (dicts, lists, tuples) holds any :class:`RawTensor`."""
    if isinstance(obj, RawTensor):
        return True
    if isinstance(obj, dict):
        return any(contains_raw(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(contains_raw(v) for v in obj)
    return False


# -- reading -----------------------------------------------------------------------------------------------
class _ReferencingUnpickler(pickle.Unpickler):
    """Unpickles a torch.save ``data.pkl`` with tensors as :class:`RawTensor` (no tensor data read)."""

    def __init__(self, data: bytes, records: dict[str, zipfile.ZipInfo], offsets: dict[str, int], prefix: str,
                 path: str) -> None:
        super().__init__(io.BytesIO(data))
        self._records, self._offsets, self._prefix, self._path = records, offsets, prefix, path
        self._storages: dict[str, RawStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module == "torch._utils" and name in _TENSOR_REBUILDERS) or (module == "torch" and name in _TORCH_NAMES):
            return TorchGlobal(module, name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "_codecs" and name == "encode":
            return codecs.encode
        raise RawUnsupported(f"global {module}.{name}")

    def persistent_load(self, pid: Any) -> RawStorage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise RawUnsupported(f"persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not (isinstance(storage_type, TorchGlobal) and storage_type.name in _STORAGES and isinstance(key, str)
                and isinstance(numel, int)):
            raise RawUnsupported(f"persistent id {pid!r}")
        if key not in self._storages:
            info = self._records.get(f"{self._prefix}data/{key}")
            if info is None:
                raise RawUnsupported(f"no record data/{key}")
            if numel * _STORAGES[storage_type.name][1] > info.file_size:
                raise RawUnsupported(f"record data/{key} holds {info.file_size} bytes, fewer than {numel} elements")
            self._storages[key] = RawStorage(self._path, self._offsets[info.filename], info.file_size, storage_type,
                                             numel, info.CRC)
        return self._storages[key]


def _data_offset(handle: Any, info: zipfile.ZipInfo, size: int) -> int:
    handle.seek(info.header_offset)
    header = handle.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise RawUnsupported(f"bad local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > size:
        raise RawUnsupported(f"record {info.filename} runs past the end of the file")
    return start


def read_torch_file(path: str | os.PathLike[str]) -> Any:
    """The object a ``torch.save`` zip file holds, its tensors as :class:`RawTensor` (bytes left in the file)."""
    path = os.fspath(path)
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":
                raise RawUnsupported("not a zip file")
            handle.seek(0)
            archive = zipfile.ZipFile(handle)
            infos = archive.infolist()
            pickles = [i for i in infos if i.filename.endswith("data.pkl") and i.filename.count("/") == 1]
            if len(pickles) != 1:
                raise RawUnsupported("no single <archive>/data.pkl")
            prefix = pickles[0].filename[: -len("data.pkl")]
            records: dict[str, zipfile.ZipInfo] = {}
            offsets: dict[str, int] = {}
            for info in infos:
                if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                    raise RawUnsupported(f"record {info.filename} is compressed or encrypted")
                if not info.filename.startswith(prefix):
                    raise RawUnsupported(f"record {info.filename} outside {prefix}")
                records[info.filename] = info
            byteorder = records.get(prefix + "byteorder")
            if byteorder is not None and archive.read(byteorder) != b"little":
                raise RawUnsupported("not little-endian")
            data = archive.read(pickles[0])
            for info in infos:
                if info.filename.startswith(prefix + "data/"):
                    offsets[info.filename] = _data_offset(handle, info, size)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, struct.error) as exc:
        raise RawUnsupported(str(exc)) from None
    try:
        return _ReferencingUnpickler(data, records, offsets, prefix, path).load()
    except RawUnsupported:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling problem: the torch path words it
        raise RawUnsupported(f"{type(exc).__name__}: {exc}") from None


def _contiguous_stride(shape: list[int]) -> tuple[int, ...]:
    stride, step = [], 1
    for dim in reversed(shape):
        stride.append(step)
        step *= max(dim, 1)
    return tuple(reversed(stride))


_REBUILD_TENSOR = TorchGlobal("torch._utils", "_rebuild_tensor_v2")


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, RawTensor]:
    """A safetensors file's tensors (names -> :class:`RawTensor`), from its header only."""
    path = os.fspath(path)
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) != 8:
                raise RawUnsupported("no header")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > min(size - 8, 100 << 20):
                raise RawUnsupported("header length past the end of the file")
            header = json.loads(handle.read(header_len))
    except (OSError, ValueError, struct.error) as exc:
        raise RawUnsupported(str(exc)) from None
    if not isinstance(header, dict):
        raise RawUnsupported("header is not an object")
    base = 8 + header_len
    tensors: dict[str, RawTensor] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            storage_name = _SAFETENSORS_DTYPES[spec["dtype"]]
            shape = [int(d) for d in spec["shape"]]
            begin, end = (int(x) for x in spec["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RawUnsupported(f"tensor {name!r}: {exc}") from None
        numel = math.prod(shape)
        element = _STORAGES[storage_name][1]
        if any(d < 0 for d in shape) or end - begin != numel * element or begin < 0 or base + end > size:
            raise RawUnsupported(f"tensor {name!r}: offsets do not match its shape or the file")
        storage = RawStorage(path, base + begin, end - begin, TorchGlobal("torch", storage_name), numel)
        tensors[name] = RawTensor(_REBUILD_TENSOR, (storage, 0, tuple(shape), _contiguous_stride(shape), False,
                                                    collections.OrderedDict()))
    return tensors
