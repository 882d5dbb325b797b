"""Checkpoints: round trip, and every hostile or broken file refused without running it."""

import io
import os
import pickle
import zipfile

import pytest
import torch

from deepcluster_cli.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from deepcluster_cli.errors import DataError, ModelError


def sample(kind="model"):
    return Checkpoint(
        kind=kind,
        method="kmeans",
        config={"n_init": 10},
        schema={"feature_names": ["a", "b"], "n_features": 2},
        scaler={"kind": "none", "params": {}},
        state={"centroids": torch.ones(3, 2)},
        history=[{"epoch": 1, "loss": 0.5}],
        extra={"n_clusters": 3},
    )


def test_round_trip_keeps_everything(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, sample())
    ck = load_checkpoint(path)
    assert ck.method == "kmeans" and ck.config == {"n_init": 10}
    assert ck.schema["feature_names"] == ["a", "b"]
    assert torch.equal(ck.state["centroids"], torch.ones(3, 2))
    assert ck.versions["torch"] == torch.__version__


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/deepcluster-pwned",))


def test_pickle_payload_is_refused_and_never_executed(tmp_path):
    marker = "/tmp/deepcluster-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    payload = sample().to_payload()
    payload["extra"]["x"] = Payload()
    torch.save(payload, path)
    with pytest.raises(ModelError, match="refused"):
        load_checkpoint(path)
    assert not os.path.exists(marker)


def test_plain_pickle_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "p.pt"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelError, match="not a deepcluster checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_a_clean_error(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, sample())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        load_checkpoint(path)


def test_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"weight": torch.ones(2)}, path)
    with pytest.raises(ModelError, match="not a deepcluster checkpoint"):
        load_checkpoint(path)


def test_newer_format_version_asks_for_upgrade(tmp_path):
    path = tmp_path / "m.pt"
    ck = sample()
    ck.format_version = 99
    torch.save(ck.to_payload(), path)
    with pytest.raises(ModelError, match="newer"):
        load_checkpoint(path)


def test_kind_mismatch_and_missing_file(tmp_path):
    path = tmp_path / "ae.pt"
    save_checkpoint(path, sample(kind="autoencoder"))
    with pytest.raises(
        ModelError,
        match="is an autoencoder .from deepcluster pretrain.; this needs a clustering model",
    ):
        load_checkpoint(path, kinds=("model",))
    with pytest.raises(DataError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_failed_save_leaves_existing_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    path.write_bytes(b"original")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, sample())
    assert path.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_zip_without_payload_is_corrupt(tmp_path):
    path = tmp_path / "z.pt"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "hi")
    path.write_bytes(buf.getvalue())
    with pytest.raises(ModelError):
        load_checkpoint(path)


DAMAGED = {  # a field edited by hand or by another tool: the file still loads
    "n_features not a number": (lambda p: p["schema"].update(n_features="abc"), "n_features"),
    "no n_features": (lambda p: p["schema"].clear(), "n_features"),
    "names of another width": (lambda p: p["schema"].update(feature_names=["a"]), "feature_names"),
    "history of numbers": (lambda p: p.update(history=[1, 2]), "history"),
    "n_clusters not a number": (lambda p: p["extra"].update(n_clusters="x"), "n_clusters"),
    "n_clusters a bool": (lambda p: p["extra"].update(n_clusters=True), "n_clusters"),
    "scaler of no kind": (lambda p: p.update(scaler={"kind": "log"}), "scaler"),
    "state not tensors": (lambda p: p["state"].update(centroids=[1.0, 2.0]), "tensors"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_field_is_a_model_error_naming_it(tmp_path, case):
    """Each of these used to load and then fail in the command as an internal error (exit
    1: ValueError, KeyError, TypeError, AttributeError) instead of a ModelError (exit 2)."""
    edit, words = DAMAGED[case]
    payload = sample().to_payload()
    edit(payload)
    path = tmp_path / "m.pt"
    torch.save(payload, path)
    with pytest.raises(ModelError, match=f"m.pt: damaged checkpoint: .*{words}"):
        load_checkpoint(path)


def test_an_autoencoder_needs_no_n_clusters(tmp_path):
    ck = sample("autoencoder")
    ck.extra = {}
    save_checkpoint(tmp_path / "ae.pt", ck)
    assert load_checkpoint(tmp_path / "ae.pt").kind == "autoencoder"


def test_a_flipped_byte_inside_a_tensor_fails_the_zip_checksum(tmp_path):
    """torch.load does not check the zip's CRC-32s: one changed byte of a centroid loaded as
    a silently different model (exit 0 from assign, labels changed)."""
    ck = sample()
    ck.state["centroids"] = torch.full((3, 2), 1234.5)
    path = tmp_path / "m.pt"
    save_checkpoint(path, ck)
    raw = bytearray(path.read_bytes())
    at = bytes(raw).find(torch.full((6,), 1234.5).numpy().tobytes())
    assert at > 0
    raw[at + 13] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="m.pt: corrupt checkpoint: .*fails its checksum"):
        load_checkpoint(path)


def test_n_clusters_other_than_the_models_is_a_damaged_checkpoint(tmp_path):
    from deepcluster_cli.pipeline import load_model

    ck = sample()
    ck.extra["spec"] = {"n_clusters": 3, "dim": 2}
    path = tmp_path / "m.pt"
    save_checkpoint(path, ck)
    assert load_model(path).model.centroids.shape == (3, 2)
    ck.extra["n_clusters"] = 2
    save_checkpoint(path, ck)
    with pytest.raises(ModelError, match="m.pt: damaged checkpoint: n_clusters is 2 but its model"):
        load_model(path)
