"""Priming reads the prime once, in chunks, and scores only its last position, whatever the streams."""

import subprocess
import sys

import pytest
import torch
from conftest import TEXT

import charrnn.lm.sample as sample_module
from charrnn.core.tokenizer import CharTokenizer
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN
from charrnn.lm.sample import SampleSettings, beam_search, sample


def test_the_prime_is_read_once_in_chunks_and_only_its_last_position_scored(monkeypatch):
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=tok.vocab_size, cell="lstm", num_layers=2, hidden_size=16,
                                  embedding_dim=8))
    monkeypatch.setattr(sample_module, "PRIME_CHUNK", 64, raising=False)
    rnn_inputs, head_inputs = [], []
    model.rnn.register_forward_pre_hook(lambda m, args: rnn_inputs.append(tuple(args[0].shape)))
    model.head.register_forward_pre_hook(lambda m, args: head_inputs.append(tuple(args[0].shape)))
    prime = TEXT[:1000]
    sample(model, tok, prime=prime, length=5, settings=SampleSettings(1.0), num_samples=8, seed=0)
    beam_search(model, tok, prime=prime, length=5, beam_size=6)
    assert len(rnn_inputs) == 2 * 16  # 1001 ids (with <eod>) in 64-character chunks, for each call
    assert all(shape[0] == 1 and shape[1] <= 64 for shape in rnn_inputs)  # one stream, whatever the streams
    assert head_inputs == [(1, 16), (1, 16)]  # the last position only (the stepper has its own copy)


PEAK_SCRIPT = """
import resource, sys, torch
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN
from charrnn.lm.sample import SampleSettings, beam_search, sample
from charrnn.core.tokenizer import CharTokenizer
torch.set_num_threads(1)
text = open(sys.argv[1], encoding="utf-8").read()
tok = CharTokenizer.from_text(text)
model = CharRNN(CharRNNConfig(vocab_size=tok.vocab_size, cell="gru", num_layers=1, hidden_size=32, embedding_dim=16))
sample(model, tok, prime=text[:500], length=5, num_samples=64, seed=0)  # warm up every allocation
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sample(model, tok, prime=text, length=5, settings=SampleSettings(1.0), num_samples=64, seed=0)
beam_search(model, tok, prime=text, length=5, beam_size=64)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)  # kB -> MB
"""


@pytest.mark.slow
def test_priming_memory_does_not_grow_with_prime_times_streams(tmp_path):
    # 40,000 prime characters x 64 streams: reading the prime in every stream, with logits everywhere, grew
    # the peak by 1.8 GB (the GRU's input projections and the logits, each 64 x 40,001 x ...); read once, about 5 MB.
    corpus = tmp_path / "prime.txt"
    corpus.write_text((TEXT * 40)[:40_000], encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(corpus)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    grew_mb = int(done.stdout.split()[-1])
    assert grew_mb < 64, f"priming grew the peak RSS by {grew_mb} MB"
