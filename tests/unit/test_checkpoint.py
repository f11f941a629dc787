"""The TF1 checkpoint reader against bundles written by real TensorFlow."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bert_serving.model import checkpoint
from bert_serving.model.checkpoint import CheckpointError, CheckpointReader, crc32c

from ..conftest import TF_BUNDLES


def _digest(array: np.ndarray) -> str:
    if array.dtype == object:  # strings: each element's 8-byte LE length, then its bytes
        h = hashlib.sha256()
        for item in array.reshape(-1):
            h.update(len(item).to_bytes(8, "little"))
            h.update(item)
        return h.hexdigest()
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.mark.parametrize("folder, prefix", [("many", "model.ckpt-7"), ("big", "model.ckpt")])
def test_every_tensor_matches_the_manifest(folder: str, prefix: str) -> None:
    manifest = json.loads((TF_BUNDLES / folder / "manifest.json").read_text())
    reader = CheckpointReader(TF_BUNDLES / folder / prefix)
    assert set(reader.variable_names()) == set(manifest)
    dtypes, shapes = reader.get_variable_to_dtype_map(), reader.get_variable_to_shape_map()
    for name, info in manifest.items():
        assert dtypes[name] == info["dtype"], name
        assert list(shapes[name]) == info["shape"], name
        tensor = reader.get_tensor(name)
        assert list(tensor.shape) == info["shape"], name
        assert _digest(tensor) == info["sha256"], name


def test_index_spanning_two_blocks_is_read_whole() -> None:
    # 12,022 entries do not fit one 256 KB index data block
    reader = CheckpointReader(TF_BUNDLES / "many" / "model.ckpt-7")
    assert len(reader.variable_names()) == 12022
    assert reader.get_tensor("global_step") == 7


def test_special_float_values_survive() -> None:
    values = CheckpointReader(TF_BUNDLES / "big" / "model.ckpt").get_tensor("misc/nan_inf")
    assert np.isnan(values).any() and np.isposinf(values).any() and np.isneginf(values).any()
    assert np.signbit(values[values == 0]).any()  # -0.0 keeps its sign


def _copy_bundle(tmp_path: Path, folder: str = "big") -> Path:
    target = tmp_path / folder
    shutil.copytree(TF_BUNDLES / folder, target)
    return target


def test_flipped_byte_in_a_tensor_is_a_checksum_error(tmp_path: Path) -> None:
    bundle = _copy_bundle(tmp_path)
    data = bundle / "model.ckpt.data-00000-of-00001"
    reader = CheckpointReader(bundle / "model.ckpt")
    name = "bert/embeddings/word_embeddings"
    offset = reader._entries[name].offset + 1000
    raw = bytearray(data.read_bytes())
    raw[offset] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"corrupt: checksum mismatch in tensor 'bert/embeddings/word_embeddings'"):
        CheckpointReader(bundle / "model.ckpt").get_tensor(name)
    # without verification the damaged bytes come through
    assert CheckpointReader(bundle / "model.ckpt", verify=False).get_tensor(name).shape == (30522, 64)


def test_truncated_data_file_is_reported_with_its_name(tmp_path: Path) -> None:
    bundle = _copy_bundle(tmp_path)
    data = bundle / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: 1_000_000])
    reader = CheckpointReader(bundle / "model.ckpt")
    with pytest.raises(CheckpointError, match=r"data-00000-of-00001 is truncated: tensor 'bert/embeddings/word_embeddings'"):
        reader.get_tensor("bert/embeddings/word_embeddings")


def test_corrupt_index_block_is_a_checksum_error(tmp_path: Path) -> None:
    bundle = _copy_bundle(tmp_path, "many")
    index = bundle / "model.ckpt-7.index"
    raw = bytearray(index.read_bytes())
    raw[100] ^= 0x01
    index.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum mismatch in a table block"):
        CheckpointReader(bundle / "model.ckpt-7")


def test_truncated_index_and_missing_files(tmp_path: Path) -> None:
    bundle = _copy_bundle(tmp_path)
    index = bundle / "model.ckpt.index"
    index.write_bytes(index.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="bad magic|too short"):
        CheckpointReader(bundle / "model.ckpt")
    with pytest.raises(CheckpointError, match="does not exist"):
        CheckpointReader(tmp_path / "nothing" / "model.ckpt")
    (bundle / "model.ckpt.data-00000-of-00001").unlink()
    shutil.copy(TF_BUNDLES / "big" / "model.ckpt.index", index)
    with pytest.raises(CheckpointError, match="data file .* does not exist"):
        CheckpointReader(bundle / "model.ckpt").get_tensor("misc/int32")


def test_pure_python_crc_matches_the_c_extension() -> None:
    payload = np.random.default_rng(0).bytes(10_000)
    assert checkpoint._crc32c_python(payload) == crc32c(payload)
    # RFC 3720 test vector: 32 bytes of zeros
    assert checkpoint._crc32c_python(bytes(32)) == 0x8A9136AA
    assert crc32c(payload[5000:], crc32c(payload[:5000])) == crc32c(payload)


def test_reader_works_without_the_c_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "_google_crc32c", None)
    reader = CheckpointReader(TF_BUNDLES / "many" / "model.ckpt-7")
    assert reader.get_tensor("global_step") == 7
