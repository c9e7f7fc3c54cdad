"""Lightning checkpoints written as ``torch.save`` files by copying the bytes of raw tensors.

The dict is pickled as ``torch.save`` pickles it, each :class:`~.rawtensors.RawStorage` becoming a
record whose bytes are copied file-to-file in the kernel (``os.copy_file_range``), reusing the source
zip's CRC32s; safetensors bytes are checksummed through a memory map (zlib, ~3 GB/s). Why: no tensor
byte changes in a conversion, so reading every byte into memory (``torch.load``) and CRC-ing it again
in torch's slow zip writer (``torch.save``) is work for nothing. The file has the same records and the
same 64-byte alignment as one ``torch.save`` writes, zip64 past 4 GiB. Torch-free.
"""

from __future__ import annotations

import errno
import io
import mmap
import os
import pickle
import secrets
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

from .rawtensors import RawCall, RawStorage, RawUnsupported, TorchGlobal

__all__ = ["write_checkpoint", "ALIGNMENT"]

ALIGNMENT = 64  # torch.save aligns every record's data to 64 bytes (``.storage_alignment``)
PROTOCOL = 2  # torch.save's default pickle protocol
COPY_CHUNK = 8 << 20  # bytes per read when a checksum must be computed on the way
KERNEL_CHUNK = 64 << 20  # bytes per copy_file_range call: a cancel is seen between two
_ZIP64_LIMIT = 0xFFFFFFFF  # sizes/offsets at or above this need zip64 fields (a module value: tests lower it)
_FULL32, _FULL16 = 0xFFFFFFFF, 0xFFFF  # "see the zip64 fields" markers


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
