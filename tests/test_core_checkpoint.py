import os
import pickle
from pathlib import Path

import pytest
import torch

from charrnn.core.checkpoint import atomic_save, checkpoint_info, load_checkpoint, save_checkpoint
from charrnn.core.errors import CharRNNError
from charrnn.core.tokenizer import CharTokenizer
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN, load_model, model_from_checkpoint
from charrnn.lm.sample import SampleSettings, sample


def small_model(cell="lstm"):
    torch.manual_seed(0)
    tok = CharTokenizer.from_text("abc def\n")
    return CharRNN(CharRNNConfig(vocab_size=tok.vocab_size, cell=cell, hidden_size=8, embedding_dim=4)), tok


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_save_load_gives_identical_logits(tmp_path, cell):
    model, tok = small_model(cell)
    save_checkpoint(tmp_path / "m.pt", model, tok, task="lm")
    loaded, tok2, ckpt = load_model(tmp_path / "m.pt")
    x = torch.tensor([[0, 1, 2, 3]])
    model.eval()
    assert torch.equal(model(x)[0], loaded(x)[0])
    assert tok2 == tok and ckpt["version"] == 2 and ckpt["task"] == "lm"


def test_checkpoint_saved_from_another_device_loads_on_cpu(tmp_path):
    # What a GPU-side torch.save writes: tensors whose storage location says "cuda:0". Without a GPU the
    # file is made by rewriting the location tags of a CPU save; loading must map them onto the CPU.
    model, tok = small_model()
    save_checkpoint(tmp_path / "m.pt", model, tok, task="lm")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    if torch.cuda.is_available():
        ckpt["model_state"] = {k: v.cuda() for k, v in ckpt["model_state"].items()}
        torch.save(ckpt, tmp_path / "gpu.pt")
    else:
        # Rewrite the stored location tags the way a CUDA save records them.
        import zipfile
        src = zipfile.ZipFile(tmp_path / "m.pt")
        with zipfile.ZipFile(tmp_path / "gpu.pt", "w") as dst:
            for item in src.infolist():
                data = src.read(item.filename)
                if item.filename.endswith("data.pkl"):
                    data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
                dst.writestr(item, data)
        assert b"cuda:0" in zipfile.ZipFile(tmp_path / "gpu.pt").read(
            [n for n in zipfile.ZipFile(tmp_path / "gpu.pt").namelist() if n.endswith("data.pkl")][0])
    loaded, _, _ = load_model(tmp_path / "gpu.pt", "cpu")
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    x = torch.tensor([[0, 1, 2]])
    model.eval()
    assert torch.equal(model(x)[0], loaded(x)[0])


class Malicious:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.pt"
    torch.save({"format": "charrnn-checkpoint", "version": 1, "payload": Malicious()}, bad, pickle_protocol=2)
    with pytest.raises(CharRNNError, match="could run code"):
        load_checkpoint(bad)
    assert not (tmp_path / "pwned").exists()
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(Malicious(), f)
    with pytest.raises(CharRNNError, match="not a charrnn checkpoint"):
        load_checkpoint(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()


def test_not_a_checkpoint_and_unknown_version(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CharRNNError, match="not a charrnn checkpoint"):
        load_checkpoint(tmp_path / "notes.txt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CharRNNError, match="no 'charrnn-checkpoint' header"):
        load_checkpoint(tmp_path / "other.pt")
    model, tok = small_model()
    save_checkpoint(tmp_path / "m.pt", model, tok, task="lm")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["version"] = 99
    torch.save(ckpt, tmp_path / "future.pt")
    with pytest.raises(CharRNNError, match="format version 99"):
        load_checkpoint(tmp_path / "future.pt")
    with pytest.raises(CharRNNError, match="holds no checkpoint"):
        load_checkpoint(tmp_path)


def test_atomic_write_survives_a_crash(tmp_path, monkeypatch):
    model, tok = small_model()
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, tok, task="lm")
    before = path.read_bytes()

    def crash_mid_write(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError):
        save_checkpoint(path, model, tok, task="lm")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind
    monkeypatch.undo()
    model_from_checkpoint(load_checkpoint(path))


def test_info_describes_the_run(trained_run):
    run, _ = trained_run
    info = checkpoint_info(run)
    assert info["task"] == "lm" and info["format_version"] == 2
    assert info["cell"] == "gru" and info["step"] == 60 and info["trained_on"] == "cpu"
    assert info["num_parameters"] == sum(p.numel() for p in load_model(run)[0].parameters())
    assert info["best_val_loss"] == round(load_checkpoint(run)["meta"]["best"], 4) and info["resumable"]


V1 = Path(__file__).parent / "fixtures" / "v1_lstm_1x8.pt"  # written by the release before format version 2


def test_version_1_checkpoint_still_loads():
    model, tok, ckpt = load_model(V1)
    assert ckpt["task"] == "lm" and model.config.cell == "lstm" and model.config.hidden_size == 8
    text = sample(model, tok, prime="hello", length=10, settings=SampleSettings(0.0), stop_at_eod=False)[0]
    assert len(text) == 10 and set(text) <= set("hello world, charrnn.\n")  # the characters it was trained on
    ts = ckpt["train_state"]
    assert ts["step"] == 2 and ts["best"] == ckpt["meta"]["best"] and len(ts["task"]["hidden_state"]) == 2
    info = checkpoint_info(V1)
    assert info["task"] == "lm" and info["format_version"] == 1 and info["best_val_loss"] is not None


def test_checkpoint_of_another_task_is_refused_with_the_command_that_reads_it(tmp_path):
    model, tok = small_model()
    save_checkpoint(tmp_path / "c.pt", model, tok, task="caption")
    with pytest.raises(CharRNNError, match="holds a 'caption' model.*charrnn caption"):
        load_model(tmp_path / "c.pt")


def test_atomic_save_plain(tmp_path):
    atomic_save({"a": torch.ones(1)}, tmp_path / "x" / "y.pt")
    assert torch.load(tmp_path / "x" / "y.pt", weights_only=True)["a"].item() == 1
