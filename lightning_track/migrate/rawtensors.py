"""Legacy tensors by reference, and Lightning checkpoints written by copying their bytes.

Converting a checkpoint does not change a single tensor byte: only the container changes (a
``torch.save`` zip or a safetensors file in, a ``torch.save`` zip with a Lightning dict out). So
instead of ``torch.load`` (read every byte into memory) and ``torch.save`` (CRC32 every byte in
torch's slow zip writer, write it again), the legacy file's pickle is read with every tensor kept
as a :class:`RawTensor` placeholder that says where its bytes are, and :func:`write_checkpoint`
pickles the new dict with the same placeholders and copies the bytes file-to-file in the kernel
(``os.copy_file_range``), reusing the source zip's CRC32s; safetensors bytes are checksummed through
a memory map (zlib, ~3 GB/s). The result is a standard ``torch.save`` file: same records, same
64-byte alignment, loaded by ``torch.load`` and Lightning like any other. torch's globals are kept
as names (:class:`TorchGlobal`), so none of this imports torch (~2 s saved per process).

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
import mmap
import os
import pickle
import secrets
import struct
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RawUnsupported", "TorchGlobal", "RawCall", "RawTensor", "RawStorage", "read_torch_file",
           "read_safetensors", "contains_raw", "materialize", "write_checkpoint", "ALIGNMENT"]

ALIGNMENT = 64  # torch.save aligns every record's data to 64 bytes (``.storage_alignment``)
PROTOCOL = 2  # torch.save's default pickle protocol
COPY_CHUNK = 8 << 20  # bytes per read when a checksum must be computed on the way
KERNEL_CHUNK = 64 << 20  # bytes per copy_file_range call: a cancel is seen between two
_ZIP64_LIMIT = 0xFFFFFFFF  # sizes/offsets at or above this need zip64 fields (a module value: tests lower it)
_FULL32, _FULL16 = 0xFFFFFFFF, 0xFFFF  # "see the zip64 fields" markers

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


# -- writing -----------------------------------------------------------------------------------------------
class _ReferencePickler(pickle._Pickler):  # the Python pickler: its save_global can be taught TorchGlobal
    """Pickles like ``torch.save``: each :class:`RawStorage` becomes a persistent id with a new record key,
    each :class:`RawCall` the same call again, each :class:`TorchGlobal` its global -- all without torch."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self.keys: dict[int, str] = {}
        self.storages: list[RawStorage] = []

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is not RawStorage:
            return None
        key = self.keys.get(id(obj))
        if key is None:
            key = self.keys[id(obj)] = str(len(self.storages))
            self.storages.append(obj)
        return ("storage", obj.storage_type, key, "cpu", obj.numel)

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, RawCall):
            return obj.func, obj.args
        if type(obj) is TorchGlobal:
            return obj.name  # a string: "save as a global", which save_global below writes
        if type(obj).__module__.startswith("torch"):
            raise RawUnsupported(f"a loaded {type(obj).__name__} among raw tensors")
        return NotImplemented

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if type(obj) is not TorchGlobal:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)
        return None


class _ZipWriter:
    """A STORED zip as ``torch.save`` writes it: data aligned to 64 bytes, zip64 fields when needed."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.fd = handle.fileno()
        self.entries: list[tuple[bytes, int, int, int]] = []  # name, header offset, size, crc

    def _local_header(self, name: bytes, size: int, crc: int) -> bytes:
        offset = self.handle.tell()
        zip64 = size >= _ZIP64_LIMIT
        extra = struct.pack("<HHQQ", 1, 16, size, size) if zip64 else b""
        used = offset + 30 + len(name) + len(extra) + 4
        extra += b"FB" + struct.pack("<H", -used % ALIGNMENT) + b"Z" * (-used % ALIGNMENT)
        sizes = _FULL32 if zip64 else size
        self.entries.append((name, offset, size, crc))
        return struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45 if zip64 else 20, 0x800, 0, 0, 0x21, crc,
                           sizes, sizes, len(name), len(extra)) + name + extra

    def add_bytes(self, name: str, data: bytes) -> None:
        self.handle.write(self._local_header(name.encode(), len(data), zlib.crc32(data)))
        self.handle.write(data)

    def add_storage(self, name: str, storage: RawStorage, source_fd: int, cancel: threading.Event | None) -> None:
        """Copy ``storage.length`` bytes from the source; the CRC is the source's or computed on the way."""
        header = self._local_header(name.encode(), storage.length, storage.crc32 or 0)
        self.handle.write(header)
        self.handle.flush()
        start = self.handle.tell()
        if storage.crc32 is not None:
            _copy_range(source_fd, self.fd, storage.offset, start, storage.length, cancel)
        else:
            crc = _crc_of_range(source_fd, storage.offset, storage.length, cancel)
            if crc is not None:  # checksummed in place (mapped page cache), then copied by the kernel
                _copy_range(source_fd, self.fd, storage.offset, start, storage.length, cancel)
            else:
                crc = _copy_range_with_crc(source_fd, self.fd, storage.offset, start, storage.length, cancel)
            os.pwrite(self.fd, struct.pack("<I", crc), start - len(header) + 14)
            self.entries[-1] = self.entries[-1][:3] + (crc,)
        self.handle.seek(start + storage.length)

    def finish(self) -> None:
        central = self.handle.tell()
        for name, offset, size, crc in self.entries:
            zip64 = size >= _ZIP64_LIMIT or offset >= _ZIP64_LIMIT
            # zip64 extra: the two sizes if they overflow, then the offset if it does
            fields = ([size, size] if size >= _ZIP64_LIMIT else []) + ([offset] if offset >= _ZIP64_LIMIT else [])
            extra = struct.pack("<HH", 1, 8 * len(fields)) + struct.pack(f"<{len(fields)}Q", *fields) if zip64 else b""
            sizes = _FULL32 if size >= _ZIP64_LIMIT else size
            at = _FULL32 if offset >= _ZIP64_LIMIT else offset
            version = 45 if zip64 else 20
            self.handle.write(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", version, version, 0x800, 0, 0, 0x21,
                                          crc, sizes, sizes, len(name), len(extra), 0, 0, 0, 0, at) + name + extra)
        end = self.handle.tell()
        count, length = len(self.entries), end - central
        zip64 = count >= _FULL16 or central >= _ZIP64_LIMIT or length >= _ZIP64_LIMIT
        if zip64:
            self.handle.write(struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, length,
                                          central))
            self.handle.write(struct.pack("<4sIQI", b"PK\x06\x07", 0, end, 1))
        entries = _FULL16 if zip64 else count
        self.handle.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, entries, entries,
                                      _FULL32 if zip64 else length, _FULL32 if zip64 else central, 0))


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise InterruptedError("checkpoint copy cancelled")


def _copy_range(src: int, dst: int, src_offset: int, dst_offset: int, length: int,
                cancel: threading.Event | None = None) -> None:
    """``length`` bytes between files, in the kernel when it can (no pass through Python)."""
    done = 0
    while done < length:
        _check(cancel)
        try:
            n = os.copy_file_range(src, dst, min(length - done, KERNEL_CHUNK), src_offset + done, dst_offset + done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                raise
            _copy_range_with_crc(src, dst, src_offset + done, dst_offset + done, length - done, cancel)
            return
        if n == 0:
            raise OSError(errno.EIO, f"source ended {length - done} bytes early")
        done += n


def _crc_of_range(fd: int, offset: int, length: int, cancel: threading.Event | None) -> int | None:
    """CRC32 of a file range read through a memory map (no copy into Python); None if it cannot be mapped."""
    if length == 0:
        return 0
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    try:
        if os.fstat(fd).st_size < offset + length:  # mapped bytes past the end would be a SIGBUS
            return None
        mapped = mmap.mmap(fd, offset + length - start, access=mmap.ACCESS_READ, offset=start)
    except (OSError, ValueError):
        return None
    crc = 0
    try:
        with memoryview(mapped) as view:
            for at in range(offset - start, offset - start + length, KERNEL_CHUNK):
                _check(cancel)
                crc = zlib.crc32(view[at: min(at + KERNEL_CHUNK, offset - start + length)], crc)
    finally:
        mapped.close()
    return crc


def _copy_range_with_crc(src: int, dst: int, src_offset: int, dst_offset: int, length: int,
                         cancel: threading.Event | None = None) -> int:
    buffer = bytearray(min(COPY_CHUNK, max(length, 1)))
    view = memoryview(buffer)
    crc = done = 0
    while done < length:
        _check(cancel)
        n = os.preadv(src, [view[: min(len(buffer), length - done)]], src_offset + done)
        if n == 0:
            raise OSError(errno.EIO, f"source ended {length - done} bytes early")
        crc = zlib.crc32(view[:n], crc)
        written = 0
        while written < n:
            written += os.pwrite(dst, view[written:n], dst_offset + done + written)
        done += n
    return crc


def write_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike[str],
                     cancel: threading.Event | None = None) -> int:
    """Write ``checkpoint`` (with :class:`RawTensor` values) as a ``torch.save`` file; returns its size.

    ``cancel`` set stops the copy between chunks with ``InterruptedError`` (the file is then partial:
    the caller writes into a staging folder it removes)."""
    buffer = io.BytesIO()
    pickler = _ReferencePickler(buffer)
    pickler.dump(checkpoint)
    archive = Path(path).stem or "archive"
    sources: dict[str, int] = {}
    try:
        with open(path, "wb") as handle:
            writer = _ZipWriter(handle)
            writer.add_bytes(f"{archive}/data.pkl", buffer.getvalue())
            writer.add_bytes(f"{archive}/.format_version", b"1")
            writer.add_bytes(f"{archive}/.storage_alignment", str(ALIGNMENT).encode())
            writer.add_bytes(f"{archive}/byteorder", b"little")
            for key, storage in enumerate(pickler.storages):
                if storage.path not in sources:
                    sources[storage.path] = os.open(storage.path, os.O_RDONLY)
                writer.add_storage(f"{archive}/data/{key}", storage, sources[storage.path], cancel)
            writer.add_bytes(f"{archive}/version", b"3\n")
            writer.add_bytes(f"{archive}/.data/serialization_id", str(secrets.randbits(128)).zfill(40).encode())
            writer.finish()
            return handle.tell()
    finally:
        for fd in sources.values():
            os.close(fd)
