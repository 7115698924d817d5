import pytest
import torch

from charrnn.lm.config import LMTrainConfig
from charrnn.lm.task import train

# A short, repetitive text: small enough to train on in seconds, structured enough to learn.
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 12


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests are tiny; more threads only add scheduling noise on a shared 2-core machine.
    torch.set_num_threads(1)
    yield


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def tiny_config(corpus, out, **kw) -> LMTrainConfig:
    base = dict(corpus=str(corpus), out=str(out), cell="lstm", num_layers=1, hidden_size=32, embedding_dim=16,
                batch_size=4, seq_len=16, max_steps=10, eval_every=5, lr=1e-2, seed=0, device="cpu", precision="fp32")
    base.update(kw)
    return LMTrainConfig(**base)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A small model trained once for the sampling, checkpoint and CLI tests."""
    root = tmp_path_factory.mktemp("run")
    corpus = root / "tiny.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    torch.set_num_threads(1)
    train(tiny_config(corpus, root / "run", cell="gru", max_steps=60, eval_every=30))
    return root / "run", corpus
