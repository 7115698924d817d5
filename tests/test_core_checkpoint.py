import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.core.checkpoint import atomic_save, checkpoint_info, load_checkpoint, save_checkpoint
from charrnn.core.errors import CharRNNError
from charrnn.core.tokenizer import CharTokenizer
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN, load_model, model_from_checkpoint
from charrnn.lm.sample import SampleSettings, sample

runner = CliRunner()


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


# ----- checkpoints that lie about themselves (issue 20): one line naming the file, never a traceback ----------

FIXTURES = Path(__file__).parent / "fixtures" / "release-0.1.0"


def task_checkpoints(tmp_path) -> dict[str, Path]:
    """One tiny checkpoint of each task, written by today's code (so with checksums)."""
    from charrnn.caption.config import CaptionerConfig
    from charrnn.caption.model import Captioner
    from charrnn.ctc.config import LineReaderConfig
    from charrnn.ctc.model import LineReader

    torch.manual_seed(0)
    tok = CharTokenizer.from_text("ab c")
    models = {"lm": small_model()[0],
              "caption": Captioner(CaptionerConfig(vocab_size=tok.vocab_size, image_size=16, channels=(4, 8),
                                                   hidden_size=8, embedding_dim=4, attention_dim=4)),
              "ctc": LineReader(LineReaderConfig(vocab_size=len(tok.codes) + 1, height=16, channels=(4, 8),
                                                 hidden_size=8, num_layers=1))}
    paths = {}
    for task, model in models.items():
        paths[task] = tmp_path / f"{task}.pt"
        save_checkpoint(paths[task], model, small_model()[1] if task == "lm" else tok, task=task,
                        train_state={"step": 1}, meta={"step": 1})
    return paths


def loaders():
    from charrnn.caption.model import load_captioner
    from charrnn.ctc.decode import load_char_lm
    from charrnn.ctc.model import load_reader

    return {"lm": {"sample/eval": load_model, "--lm": lambda p: load_char_lm(p, ["", "a"], unknown="floor")},
            "caption": {"caption sample": load_captioner}, "ctc": {"ctc decode": load_reader}}


def _set(key, value):
    return lambda c: c.update({key: value})


def _config(key, value):
    return lambda c: c["model_config"].update({key: value(c["model_config"][key]) if callable(value) else value})


# (what is wrong, how to make it, whether `info` refuses it too: info does not build the model)
BODIES = [
    ("a config that is a string", _set("model_config", "x"), True),
    ("a config that is a list", _set("model_config", [1, 2]), True),
    ("no model config", lambda c: c.pop("model_config"), True),
    ("no weights", lambda c: c.pop("model_state"), True),
    ("no tokenizer", lambda c: c.pop("tokenizer"), True),
    ("a garbage tokenizer", _set("tokenizer", "garbage"), True),
    ("a tokenizer of letters", _set("tokenizer", {"codes": "abc", "byte_level": False}), True),
    ("a tokenizer beyond Unicode", _set("tokenizer", {"codes": [2**40], "byte_level": False}), True),
    ("weights that are not tensors", _set("model_state", {"a": 1}), True),
    ("a meta that is a string", _set("meta", "x"), True),
    ("no task", lambda c: c.pop("task"), True),
    ("a hidden size that does not match", _config("hidden_size", lambda h: h + 1), False),
    ("a hidden size of 60,000 (a 57 GB model)", _config("hidden_size", 60_000), False),
    ("a dropout that is a string", _config("dropout", "x"), False),
    ("no layers", _config("num_layers", 0), False),
    ("a vocabulary of a trillion", _config("vocab_size", 10**12), False),
]


@pytest.mark.parametrize("what, damage, info_refuses", BODIES, ids=[b[0] for b in BODIES])
def test_a_checkpoint_whose_body_is_wrong_is_one_line_naming_the_file(tmp_path, what, damage, info_refuses):
    for task, path in task_checkpoints(tmp_path).items():
        ckpt = torch.load(path, weights_only=True)
        damage(ckpt)
        torch.save(ckpt, path)
        for name, load in loaders()[task].items():
            with pytest.raises(CharRNNError) as e:
                load(path)
            message = str(e.value)
            assert message.startswith(repr(str(path))) and "damaged" in message, (task, name, message)
            assert "\n" not in message
        if info_refuses:
            with pytest.raises(CharRNNError, match="is damaged"):
                checkpoint_info(path)
        else:
            assert checkpoint_info(path)["task"] == task


def test_weights_are_compared_with_the_config_before_the_model_is_built(tmp_path, monkeypatch):
    from charrnn.core.checkpoint import check_weights

    path = task_checkpoints(tmp_path)["lm"]
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"]["hidden_size"] = 60_000
    torch.save(ckpt, path)
    built_on, real_init = [], CharRNN.__init__

    def spy(self, config):
        built_on.append(torch.get_default_device().type)
        real_init(self, config)

    monkeypatch.setattr(CharRNN, "__init__", spy)
    with pytest.raises(CharRNNError, match=r"weights do not match its model config"):
        load_model(path)
    assert built_on == ["meta"]  # never built for real (57 GB): only its shapes, on the meta device
    monkeypatch.undo()
    model, _ = small_model()
    state = model.state_dict()
    with pytest.raises(CharRNNError, match="1 weights missing .*head.bias"):
        check_weights({k: v for k, v in state.items() if k != "head.bias"}, lambda: small_model()[0], "m.pt")
    with pytest.raises(CharRNNError, match="no place for .*extra"):
        check_weights({**state, "extra": torch.zeros(1)}, lambda: small_model()[0], "m.pt")


@pytest.mark.parametrize("content, what", [
    (b"hello\n", "it is a text file"), (b"{}", "it is a JSON or text file"), (b"", "is empty"),
    ((FIXTURES / "images" / "1f431.png").read_bytes(), "it is a PNG image"),
    (b"\xff\xd8\xff\xe0JFIF", "it is a JPEG image"), (pickle.dumps({"a": 1}), "it is a Python pickle"),
])
def test_a_file_that_is_not_a_checkpoint_says_what_it_is(tmp_path, content, what):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(CharRNNError, match=f"is not a charrnn checkpoint: {what}" if what != "is empty" else what):
        load_checkpoint(tmp_path / "x.pt")


def test_a_zip_of_other_files_and_a_truncated_checkpoint(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "z.pt", "w") as z:
        z.writestr("notes.txt", "hi")
    with pytest.raises(CharRNNError, match="is not a charrnn checkpoint: it is a zip archive of other files"):
        load_checkpoint(tmp_path / "z.pt")
    path = task_checkpoints(tmp_path)["lm"]
    data = path.read_bytes()
    for keep in (len(data) // 2, len(data) - 10, 100):
        path.write_bytes(data[:keep])
        with pytest.raises(CharRNNError, match=r"is truncated or damaged") as e:
            load_checkpoint(path)
        assert "Errno" not in str(e.value) and "could run code" not in str(e.value)


def flip_a_weight_byte(path: Path, tensor_index: int = 0) -> None:
    """Flip one byte inside a stored tensor of a torch zip, as a bad disk would: the zip stays readable."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(f"/data/{tensor_index}"))
    data = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_the_weights_is_found_by_the_checksum(tmp_path):
    path = task_checkpoints(tmp_path)["lm"]
    assert load_checkpoint(path)["checksums"]["model_state"].startswith("crc32:")
    flip_a_weight_byte(path)
    torch.load(path, weights_only=True)  # torch itself reads it without complaint
    with pytest.raises(CharRNNError, match=r"m?\.pt' is damaged \(its checksum does not match\)"):
        load_model(path)


def test_checkpoints_without_a_checksum_load_as_before(tmp_path):
    path = task_checkpoints(tmp_path)["lm"]
    ckpt = torch.load(path, weights_only=True)
    del ckpt["checksums"]
    torch.save(ckpt, path)
    model, _, _ = load_model(path)
    assert checkpoint_info(path)["checksum"].startswith("none")
    from charrnn.core.pretrained import HERE

    # The shipped models written before checksums, as they are (classify-surnames.pt came later, with them).
    for shipped in ("lm-tinyshakespeare.pt", "caption-emoji.pt", "ctc-lines.pt"):
        assert "checksums" not in torch.load(HERE / shipped, weights_only=True)
        assert checkpoint_info(HERE / shipped)["num_parameters"] > 0
    assert checkpoint_info(HERE / "classify-surnames.pt")["checksum"] == "verified"


def test_export_keeps_the_checksum_true(tmp_path):
    from charrnn.core.pretrained import export

    path = task_checkpoints(tmp_path)["lm"]
    export(path, tmp_path / "small.pt")
    ckpt = load_checkpoint(tmp_path / "small.pt")
    assert ckpt["model_state"]["head.weight"].dtype == torch.float16 and "source" not in torch.load(
        tmp_path / "small.pt", weights_only=True)


def test_a_damaged_best_pt_is_read_from_last_pt_with_a_warning(tmp_path, trained_run):
    import shutil

    from charrnn.core.errors import CharRNNWarning

    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    (run / "best.pt").write_bytes((run / "best.pt").read_bytes()[:1000])
    with pytest.warns(CharRNNWarning, match=r"best.pt' is truncated or damaged .*; reading '.*last.pt' \(step 60\)"):
        _, _, ckpt = load_model(run)
    assert ckpt["source"] == str(run / "last.pt")
    r = runner.invoke(app, ["sample", str(run), "-n", "5", "--seed", "1"])
    assert r.exit_code == 0 and r.stderr.startswith("warning: ") and "reading" in r.stderr, r.output
    r = runner.invoke(app, ["info", str(run), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["path"] == str(run / "last.pt")
    (run / "last.pt").write_text("not a checkpoint")
    r = runner.invoke(app, ["eval", str(run), str(trained_run[1])])
    assert r.exit_code == 2 and "last.pt beside it is not a charrnn checkpoint" in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_info_shows_a_checkpoints_strings_escaped(tmp_path):
    path = task_checkpoints(tmp_path)["lm"]
    ckpt = torch.load(path, weights_only=True)
    ckpt["meta"].update(device="\x1b]0;owned\x07cpu", corpus="\x1b[2J\x9b2Jtext\u202e.txt", precision="fp32")
    torch.save(ckpt, path)
    r = runner.invoke(app, ["info", str(path)])
    assert r.exit_code == 0, r.output
    assert not any(c in r.stdout for c in "\x1b\x07\x9b\u202e")
    assert "\\x1b]0;owned\\x07cpu" in r.stdout.replace("\n", "") or "\\x1b]0;owned" in r.stdout
    assert json.loads(runner.invoke(app, ["info", str(path), "--json"]).stdout)["trained_on"] == "\x1b]0;owned\x07cpu"


def test_the_cli_gives_one_line_for_damaged_checkpoints(tmp_path):
    paths = task_checkpoints(tmp_path)
    for path in paths.values():
        ckpt = torch.load(path, weights_only=True)
        ckpt["model_config"]["hidden_size"] += 1
        torch.save(ckpt, path)
    (tmp_path / "text.txt").write_text("abc")
    image, line = FIXTURES / "images" / "1f431.png", FIXTURES / "lines" / "000000.png"
    for args in (["info", tmp_path / "text.txt"], ["sample", paths["lm"], "-n", 3],
                 ["eval", paths["lm"], tmp_path / "text.txt"], ["caption", "sample", paths["caption"], image],
                 ["ctc", "decode", paths["ctc"], line],
                 ["ctc", "decode", FIXTURES / "ctc.pt", line, "--lm", paths["lm"], "--lm-unknown", "floor"]):
        r = runner.invoke(app, [str(a) for a in args])
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (args, r.output)
        assert len(r.stderr.strip().splitlines()) == 1 and "error: " in r.stderr, (args, r.stderr)
