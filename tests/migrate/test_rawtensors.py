"""Checkpoints written by copying tensor bytes: torch.load reads them as torch.save's own, zip tools agree."""

from __future__ import annotations

import collections
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lightning_track.migrate import rawtensors, rawwrite
from lightning_track.migrate.checkpoints import save_checkpoint
from lightning_track.migrate.rawtensors import RawTensor, RawUnsupported


def _tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    weights = {"w": torch.randn(5, 7), "b": torch.arange(6), "half": torch.randn(3, 2).to(torch.bfloat16),
               "mask": torch.tensor([True, False]), "empty": torch.empty(0, 4)}
    weights["row"] = weights["w"][2]  # a view: shares w's storage
    return weights


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride() and torch.equal(a, b)


def _data_offsets(path: Path) -> dict[str, int]:
    """Where each record's data starts (after its local header), as a zip reader finds it."""
    offsets = {}
    with open(path, "rb") as handle:
        for info in zipfile.ZipFile(handle).infolist():
            handle.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", handle.read(4))
            offsets[info.filename] = info.header_offset + 30 + name_len + extra_len
    return offsets


@pytest.fixture
def legacy_files(tmp_path: Path) -> dict[str, Path]:
    weights = _tensors()
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(5, 7)}},
                 "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}]}
    torch_file = tmp_path / "step_30.pt"
    torch.save({"model_state_dict": weights, "optimizer_state_dict": optimizer, "step": 30,
                "blob": b"\x00\xff", "ordered": collections.OrderedDict(a=1)}, torch_file)
    safetensors_file = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items() if k != "row"}, safetensors_file)
    return {"torch": torch_file, "safetensors": safetensors_file}


def test_a_torch_file_is_read_by_reference_and_written_back_equal(legacy_files: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    source = rawtensors.read_torch_file(legacy_files["torch"])
    assert isinstance(source["model_state_dict"]["w"], RawTensor)  # no tensor data was read
    assert source["step"] == 30 and source["blob"] == b"\x00\xff" and source["ordered"] == {"a": 1}
    out = tmp_path / "checkpoint-step-000030.ckpt"
    size = save_checkpoint({"state_dict": source["model_state_dict"], "optimizer_states":
                            [source["optimizer_state_dict"]], "global_step": 30}, out)
    assert size == out.stat().st_size

    loaded = torch.load(out, map_location="cpu", weights_only=True)
    original = torch.load(legacy_files["torch"], map_location="cpu", weights_only=True)
    for name, tensor in original["model_state_dict"].items():
        assert _same(loaded["state_dict"][name], tensor), name
    state = loaded["state_dict"]
    assert state["row"].untyped_storage().data_ptr() == state["w"].untyped_storage().data_ptr()  # still shared
    assert _same(loaded["optimizer_states"][0]["state"][0]["exp_avg"],
                 original["optimizer_state_dict"]["state"][0]["exp_avg"])
    assert loaded["optimizer_states"][0]["param_groups"] == original["optimizer_state_dict"]["param_groups"]
    assert torch.load(out, mmap=True, weights_only=True)["state_dict"]["w"].sum() == original["model_state_dict"][
        "w"].sum()

    archive = zipfile.ZipFile(out)
    assert archive.testzip() is None  # every CRC32 right (copied from the source zip)
    names = [i.filename for i in archive.infolist()]
    assert names[:4] == ["checkpoint-step-000030/data.pkl", "checkpoint-step-000030/.format_version",
                         "checkpoint-step-000030/.storage_alignment", "checkpoint-step-000030/byteorder"]
    assert archive.read("checkpoint-step-000030/byteorder") == b"little"
    assert all(offset % 64 == 0 for name, offset in _data_offsets(out).items() if "/data/" in name)


def test_safetensors_bytes_are_copied_with_a_computed_checksum(legacy_files: dict[str, Path],
                                                               tmp_path: Path) -> None:
    from safetensors.torch import load_file

    source = rawtensors.read_safetensors(legacy_files["safetensors"])
    out = tmp_path / "out.ckpt"
    save_checkpoint({"state_dict": source}, out)
    assert zipfile.ZipFile(out).testzip() is None
    loaded = torch.load(out, weights_only=True)["state_dict"]
    expected = load_file(legacy_files["safetensors"])
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        assert _same(loaded[name], tensor), name


def test_zip64_records_when_sizes_pass_the_32_bit_limit(legacy_files: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Real >4 GiB files are too big for a test: the limit is lowered so every field needs zip64."""
    checkpoint = {"a": rawtensors.read_safetensors(legacy_files["safetensors"]),
                  "b": rawtensors.read_torch_file(legacy_files["torch"])["model_state_dict"]}
    for limit in (1, 300):
        monkeypatch.setattr(rawwrite, "_ZIP64_LIMIT", limit)
        out = tmp_path / f"zip64-{limit}.ckpt"
        save_checkpoint(checkpoint, out)
        assert zipfile.ZipFile(out).testzip() is None
        loaded = torch.load(out, weights_only=True)
        assert _same(loaded["a"]["w"], _tensors()["w"]) and _same(loaded["b"]["half"], _tensors()["half"])


def test_files_the_copying_path_does_not_understand_are_refused(tmp_path: Path) -> None:
    old_format = tmp_path / "old.pt"
    torch.save({"w": torch.ones(2)}, old_format, _use_new_zipfile_serialization=False)
    counter = tmp_path / "counter.pt"
    torch.save({"w": torch.ones(2), "counts": collections.Counter(a=1)}, counter)
    truncated = tmp_path / "truncated.pt"
    torch.save({"w": torch.ones(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    for path in (old_format, counter, truncated):
        with pytest.raises(RawUnsupported):
            rawtensors.read_torch_file(path)
    float8 = tmp_path / "f8.safetensors"
    save_file({"w": torch.zeros(4).to(torch.float8_e4m3fn)}, float8)
    cut = tmp_path / "cut.safetensors"
    save_file({"w": torch.zeros(64)}, cut)
    cut.write_bytes(cut.read_bytes()[:-8])
    for path in (float8, cut):
        with pytest.raises(RawUnsupported):
            rawtensors.read_safetensors(path)


def test_referenced_and_loaded_tensors_together_fall_back_to_torch_save(legacy_files: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    """An optimizer file only torch.load could read beside by-reference weights: all read, then torch.save."""
    out = tmp_path / "mixed.ckpt"
    save_checkpoint({"state_dict": rawtensors.read_safetensors(legacy_files["safetensors"]),
                     "optimizer_states": [{"state": {0: {"exp_avg": torch.full((2,), 7.0)}}}]}, out)
    loaded = torch.load(out, weights_only=True)
    assert _same(loaded["state_dict"]["half"], _tensors()["half"])
    assert torch.equal(loaded["optimizer_states"][0]["state"][0]["exp_avg"], torch.full((2,), 7.0))


def test_a_checkpoint_only_torch_load_reads_still_converts(legacy_copy: Path, tmp_path: Path) -> None:
    """A pre-1.6 (non-zip) torch.save file takes the torch.load/torch.save path inside a migration."""
    from lightning_track.migrate import migrate

    run = next(legacy_copy.rglob("*_full_ft"))
    old = run / "checkpoints" / "step_60.pt"
    content = torch.load(old, weights_only=True)
    torch.save(content, old, _use_new_zipfile_serialization=False)
    with pytest.raises(RawUnsupported):
        rawtensors.read_torch_file(old)
    report = migrate(legacy_copy, tmp_path / "runs", only="*full_ft*")
    assert [r.status for r in report.runs if r.target] == ["converted"]
    converted = torch.load(next((tmp_path / "runs").glob("*/checkpoints/checkpoint-step-060.ckpt")),
                           weights_only=True)
    for name, tensor in content["model_state_dict"].items():
        assert _same(converted["state_dict"][f"model.{name}"], tensor), name
    assert converted["global_step"] == 60 and converted["loops"]["fit_loop"]["epoch_loop.state_dict"] is not None


def test_a_cancelled_copy_stops_with_interrupted_error(legacy_files: dict[str, Path], tmp_path: Path) -> None:
    """What an interrupted migration relies on: the checkpoint thread stops before its caller cleans up."""
    import threading

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(InterruptedError):
        save_checkpoint({"state_dict": rawtensors.read_safetensors(legacy_files["safetensors"])},
                        tmp_path / "x.ckpt", cancel=cancel)


def test_checkpoints_are_converted_beside_the_tracking_in_the_sequential_order(legacy_copy: Path,
                                                                             tmp_path: Path) -> None:
    """Epoch-named files need the tracking (their step is the last of the epoch): they wait for it, after
    the HF folders the thread converted; a duplicate step is still won by the first in order."""
    from lightning_track.migrate import migrate

    run = next(legacy_copy.rglob("*_qlora"))
    epoch_files = sorted((run / "checkpoints").glob("checkpoint_epoch_*.pth"))
    assert epoch_files
    report = migrate(legacy_copy, tmp_path / "runs", only="*qlora*")
    (converted,) = [r for r in report.runs if r.target]
    assert converted.status == "converted", converted.reason
    steps = sorted(int(p.stem.split("-")[-1]) for p in Path(converted.target).glob("checkpoints/*.ckpt"))
    assert len(steps) == converted.checkpoints == converted.checkpoints_found - sum(
        "already converted" in w for w in converted.warnings)
    meta = (Path(converted.target) / "meta.json").read_text()
    for path in epoch_files:
        assert path.name in meta or any(path.name in w for w in converted.warnings)
