"""Read TensorFlow 1 name-based checkpoints (V2 tensor bundles) without TensorFlow.

A checkpoint ``PREFIX`` is ``PREFIX.index`` (a LevelDB table mapping tensor names to
``BundleEntryProto``) plus ``PREFIX.data-SSSSS-of-NNNNN`` shards holding raw little-endian
tensor bytes. Every index block and every tensor carries a masked CRC32-C, verified here.
The format is written up in ``shared/reference/tf-checkpoint-format.md``; no maintained
library reads it without TensorFlow, hence this module.

    reader = CheckpointReader("uncased_L-12_H-768_A-12/bert_model.ckpt")
    reader.get_variable_to_shape_map()   # {"bert/embeddings/word_embeddings": (30522, 768), ...}
    reader.get_tensor("bert/pooler/dense/kernel")
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigurationError

__all__ = ["CheckpointError", "CheckpointReader", "available_prefixes", "crc32c", "resolve_prefix"]

logger = logging.getLogger(__name__)

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER_SIZE = 5  # 1 byte compression type + 4 bytes masked crc32c
_NO_COMPRESSION, _SNAPPY = 0, 1
_MASK_DELTA = 0xA282EAD8


class CheckpointError(ConfigurationError):
    """The checkpoint files are missing, truncated, corrupt or of an unsupported kind."""


# --- CRC32-C (Castagnoli) -------------------------------------------------------------------

try:  # a C implementation: BERT-base (440 MB) verifies in well under a second
    import google_crc32c as _google_crc32c
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    _google_crc32c = None


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def _crc32c_python(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32-C of ``data``, continuing from ``crc``; C speed when google-crc32c is installed."""
    if _google_crc32c is not None:
        return _google_crc32c.extend(crc, data)
    return _crc32c_python(data, crc)


def _unmask(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# --- protobuf wire format (just what BundleHeaderProto / BundleEntryProto need) -------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointError("varint too long")


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of a serialized protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise CheckpointError("truncated protobuf message")
        yield number, wire, value


# TF DataType enum -> (TF name, numpy dtype); bfloat16 comes from ml_dtypes, strings apart
_DTYPES: dict[int, tuple[str, str]] = {
    1: ("float32", "<f4"), 2: ("float64", "<f8"), 3: ("int32", "<i4"), 4: ("uint8", "u1"),
    5: ("int16", "<i2"), 6: ("int8", "i1"), 7: ("string", "O"), 8: ("complex64", "<c8"),
    9: ("int64", "<i8"), 10: ("bool", "?"), 14: ("bfloat16", "bfloat16"), 17: ("uint16", "<u2"),
    18: ("complex128", "<c16"), 19: ("float16", "<f2"), 22: ("uint32", "<u4"), 23: ("uint64", "<u8"),
}
_DT_STRING, _DT_BFLOAT16 = 7, 14


def _numpy_dtype(name: str, dtype: int) -> np.dtype:
    if dtype not in _DTYPES:
        raise CheckpointError(f"tensor {name!r} has unsupported TensorFlow dtype enum {dtype}")
    if dtype == _DT_BFLOAT16:
        try:
            import ml_dtypes
        except ImportError:
            raise CheckpointError(f"tensor {name!r} is bfloat16, which needs: pip install ml_dtypes") from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(_DTYPES[dtype][1])


@dataclass(frozen=True)
class _Entry:
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int | None
    sliced: bool


def _parse_entry(name: str, value: bytes) -> _Entry:
    dtype, shape, shard, offset, size, crc, sliced = 0, (), 0, 0, 0, None, False
    for number, _, field in _fields(value):
        if number == 1:
            dtype = field
        elif number == 2:
            dims = []
            for dnum, _, dim in _fields(field):
                if dnum == 2:
                    dims.append(next((v for n, _, v in _fields(dim) if n == 1), 0))
                elif dnum == 3 and dim:
                    raise CheckpointError(f"tensor {name!r} has an unknown rank")
            shape = tuple(dims)
        elif number == 3:
            shard = field
        elif number == 4:
            offset = field
        elif number == 5:
            size = field
        elif number == 6:
            crc = struct.unpack("<I", field)[0]
        elif number == 7:
            sliced = True
    return _Entry(dtype, shape, shard, offset, size, crc, sliced)


# --- the LevelDB table in PREFIX.index ------------------------------------------------------


def _block_entries(block: bytes):
    """Yield (key, value) of one table block, resolving prefix-compressed keys."""
    if len(block) < 4:
        raise CheckpointError("index block too short")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * num_restarts
    if end < 0:
        raise CheckpointError("index block has a bad restart array")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        value = block[pos : pos + value_len]
        pos += value_len
        if pos > end:
            raise CheckpointError("index block entry runs past its block")
        yield key, value


def _decompress_snappy(data: bytes) -> bytes:
    try:
        import cramjam
    except ImportError as exc:  # pragma: no cover
        raise CheckpointError("this checkpoint's index is snappy-compressed; pip install cramjam") from exc
    return bytes(cramjam.snappy.decompress_raw(data))


class CheckpointReader:
    """Random access to the tensors of one TF1 checkpoint prefix.

    ``verify`` checks each index block's and each tensor's CRC32-C; a mismatch raises
    `CheckpointError` naming the tensor and file.
    """

    def __init__(self, prefix: str | os.PathLike, *, verify: bool = True) -> None:
        self.prefix = Path(prefix)
        self.verify = verify
        self._index_path = Path(f"{self.prefix}.index")
        if not self._index_path.is_file():
            raise CheckpointError(f"checkpoint index {self._index_path} does not exist")
        self._index = self._index_path.read_bytes()
        self._entries: dict[str, _Entry] = {}
        self._num_shards = 1
        self._read_index()

    # index --------------------------------------------------------------------------------

    def _read_block(self, offset: int, size: int) -> bytes:
        end = offset + size + _BLOCK_TRAILER_SIZE
        if end > len(self._index):
            raise CheckpointError(f"{self._index_path} is truncated (a block ends past the file)")
        contents = self._index[offset : offset + size]
        kind = self._index[offset + size]
        if self.verify:
            stored = _unmask(struct.unpack_from("<I", self._index, offset + size + 1)[0])
            if crc32c(self._index[offset : offset + size + 1]) != stored:
                raise CheckpointError(f"{self._index_path} is corrupt: checksum mismatch in a table block")
        if kind == _SNAPPY:
            return _decompress_snappy(contents)
        if kind != _NO_COMPRESSION:
            raise CheckpointError(f"{self._index_path}: unknown block compression {kind}")
        return contents

    def _read_index(self) -> None:
        if len(self._index) < _FOOTER_SIZE:
            raise CheckpointError(f"{self._index_path} is too short to be a checkpoint index")
        footer = self._index[-_FOOTER_SIZE:]
        if struct.unpack_from("<Q", footer, 40)[0] != _TABLE_MAGIC:
            raise CheckpointError(f"{self._index_path} is not a TensorFlow checkpoint index (bad magic)")
        _, pos = _varint(footer, 0)  # metaindex handle: offset, size (no filters in bundles)
        _, pos = _varint(footer, pos)
        index_offset, pos = _varint(footer, pos)
        index_size, _ = _varint(footer, pos)
        # The index block's keys are shortened separators, never tensor names: only its
        # values (handles of the data blocks) are used.
        for _, handle in _block_entries(self._read_block(index_offset, index_size)):
            offset, pos = _varint(handle, 0)
            size, _ = _varint(handle, pos)
            for key, value in _block_entries(self._read_block(offset, size)):
                if key == b"":
                    self._read_header(value)
                else:
                    name = key.decode("utf-8")
                    self._entries[name] = _parse_entry(name, value)

    def _read_header(self, value: bytes) -> None:
        for number, _, field in _fields(value):
            if number == 1:
                self._num_shards = field
            elif number == 2 and field != 0:
                raise CheckpointError(f"{self._index_path}: big-endian checkpoints are not supported")

    # tensors ------------------------------------------------------------------------------

    def variable_names(self) -> list[str]:
        return sorted(self._entries)

    def get_variable_to_shape_map(self) -> dict[str, tuple[int, ...]]:
        return {name: entry.shape for name, entry in self._entries.items()}

    def get_variable_to_dtype_map(self) -> dict[str, str]:
        """TensorFlow dtype names: ``float32``, ``int64``, ``bfloat16``, ``string``..."""
        return {name: _DTYPES.get(e.dtype, (f"enum {e.dtype}",))[0] for name, e in self._entries.items()}

    def has_tensor(self, name: str) -> bool:
        return name in self._entries

    def shard_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self._num_shards:05d}")

    def get_tensor(self, name: str) -> np.ndarray:
        try:
            entry = self._entries[name]
        except KeyError:
            raise KeyError(f"tensor {name!r} is not in checkpoint {self.prefix}") from None
        if entry.sliced:
            raise CheckpointError(f"tensor {name!r} is a partitioned variable, which is not supported")
        raw = self._read_bytes(name, entry)
        if entry.dtype == _DT_STRING:
            return self._decode_strings(name, entry, raw)
        dtype = _numpy_dtype(name, entry.dtype)
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != len(raw):
            raise CheckpointError(
                f"tensor {name!r}: {len(raw)} bytes stored, {count * dtype.itemsize} expected "
                f"for shape {entry.shape}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(entry.shape)

    def _read_bytes(self, name: str, entry: _Entry) -> bytes:
        path = self.shard_path(entry.shard)
        try:
            with open(path, "rb") as f:
                f.seek(entry.offset)
                raw = f.read(entry.size)
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint data file {path} does not exist") from None
        if len(raw) != entry.size:
            raise CheckpointError(
                f"checkpoint data file {path} is truncated: tensor {name!r} needs bytes "
                f"{entry.offset}..{entry.offset + entry.size}, the file ends earlier"
            )
        if self.verify and entry.crc is not None and entry.dtype != _DT_STRING:
            if crc32c(raw) != _unmask(entry.crc):
                raise CheckpointError(f"checkpoint data file {path} is corrupt: checksum mismatch in tensor {name!r}")
        return raw

    def _decode_strings(self, name: str, entry: _Entry, raw: bytes) -> np.ndarray:
        count = int(np.prod(entry.shape, dtype=np.int64))
        pos, lengths = 0, []
        for _ in range(count):
            length, pos = _varint(raw, pos)
            lengths.append(length)
        if self.verify and entry.crc is not None:
            # the stored checksum covers the lengths as fixed uint32, then the lengths' own
            # checksum, then the bytes (tensor_bundle.cc), not the varints on disk
            crc = crc32c(struct.pack(f"<{count}I", *lengths))
            crc = crc32c(raw[pos : pos + 4], crc)
            crc = crc32c(raw[pos + 4 :], crc)
            if crc != _unmask(entry.crc):
                raise CheckpointError(f"checkpoint is corrupt: checksum mismatch in string tensor {name!r}")
        pos += 4
        values = np.empty(count, dtype=object)
        for i, length in enumerate(lengths):
            values[i] = bytes(raw[pos : pos + length])
            pos += length
        return values.reshape(entry.shape)


def resolve_prefix(directory: Path, ckpt_name: str) -> Path:
    """The checkpoint prefix ``directory/ckpt_name``, accepting a name given with a file suffix.

    Users pass ``model.ckpt-343``, sometimes ``model.ckpt-343.index`` or the data file's name.
    """
    name = ckpt_name
    for suffix in (".index", ".meta"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if ".data-" in name:
        name = name.split(".data-")[0]
    return directory / name


def available_prefixes(directory: Path) -> list[str]:
    """Checkpoint prefixes present in ``directory`` (for error messages)."""
    if not directory.is_dir():
        return []
    return sorted(p.name[: -len(".index")] for p in directory.glob("*.index"))
