"""The translator: shapes, the loss at the start, learning a tiny set, padding, attention, and its decoding (greedy,
beam, n-best, exact over two steps)."""

import itertools
import math

import pytest
import torch

from charrnn.core.decoding import beam_search_n, decode
from charrnn.core.tokenizer import CharTokenizer, PairTokenizer, WordTokenizer, tokenizer_from_dict
from charrnn.translate.config import TranslatorConfig
from charrnn.translate.decode import pair_tokenizer, translate_ids
from charrnn.translate.model import Translator, encode_targets, translate_loss

VARIANTS = [("additive", False), ("dot", False), ("additive", True), ("dot", True)]


def model(attention="additive", input_feeding=False, cell="lstm", V=9, S=7, seed=0, **sizes) -> Translator:
    torch.manual_seed(seed)
    config = dict(vocab_size=V, source_vocab_size=S, cell=cell, hidden_size=16, embedding_dim=8, attention_dim=8,
                  attention=attention, input_feeding=input_feeding)
    return Translator(TranslatorConfig(**{**config, **sizes})).eval()


def source(lengths: list[int], S=7, seed=1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, S - 2, (len(lengths), max(lengths)), generator=g)
    lengths = torch.tensor(lengths)
    ids[torch.arange(ids.size(1))[None] >= lengths[:, None]] = S - 2  # padding
    return ids, lengths


@pytest.mark.parametrize("attention, input_feeding", VARIANTS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_shapes_and_attention_rows(attention, input_feeding, cell):
    m = model(attention, input_feeding, cell)
    ids, lengths = source([5, 3, 7])
    tokens = torch.randint(0, 9, (3, 4))
    logits, alphas = m(ids, lengths, tokens)
    assert logits.shape == (3, 4, 9) and alphas.shape == (3, 4, 7)
    assert torch.allclose(alphas.sum(-1), torch.ones(3, 4), atol=1e-6)  # each row a distribution ...
    assert float(alphas[1, :, 3:].detach().abs().max()) == 0.0  # ... over the source's own tokens only


@pytest.mark.parametrize("attention, input_feeding", VARIANTS)
def test_loss_at_init_is_about_ln_v(attention, input_feeding):
    m = model(attention, input_feeding, V=40)
    ids, lengths = source([6] * 8)
    targets = encode_targets([[1, 2, 3, 4], [5, 6], [7, 8, 9, 10, 11]] * 3, eod=38, unk=39)
    with torch.no_grad():
        loss = float(translate_loss(m, ids.repeat(2, 1)[:9], lengths.repeat(2)[:9], targets, 39))
    assert abs(loss - math.log(40)) < 0.1 * math.log(40)


@pytest.mark.parametrize("attention, input_feeding", VARIANTS)
def test_the_encoder_and_attention_ignore_padding(attention, input_feeding):
    """A source's output is the same alone and padded in a batch beside a longer one."""
    m = model(attention, input_feeding)
    ids, lengths = source([3, 7])
    tokens = torch.randint(0, 9, (2, 5))
    together, _ = m(ids, lengths, tokens)
    alone, _ = m(ids[:1, :3], lengths[:1], tokens[:1])
    assert torch.allclose(together[0], alone[0], atol=1e-5)


def test_teacher_forcing_equals_stepping():
    """The fused teacher-forced pass (attention after the recurrent layers) and one step at a time agree."""
    m = model("additive", False)
    ids, lengths = source([4, 6])
    tokens = torch.randint(0, 9, (2, 5))
    fused, alphas = m(ids, lengths, tokens)
    memory, state = m.encode((ids, lengths))
    for t in range(5):
        logits, state, alpha = m.step(tokens[:, t], state, memory)
        assert torch.allclose(logits, fused[:, t], atol=1e-5) and torch.allclose(alpha, alphas[:, t], atol=1e-6)


def test_scheduled_sampling_feeds_the_models_own_guesses():
    m = model("additive", False)
    ids, lengths = source([4, 6])
    tokens = torch.randint(0, 9, (2, 6))
    truth, _ = m(ids, lengths, tokens)
    own, _ = m(ids, lengths, tokens, sample_prob=1.0)
    assert torch.allclose(truth[:, 0], own[:, 0]) and not torch.allclose(truth, own)


@pytest.mark.parametrize("attention, input_feeding", VARIANTS)
def test_beam_of_one_is_greedy(attention, input_feeding):
    m = model(attention, input_feeding)
    src = source([5, 2, 6])
    greedy = decode(m, src, bos=7, eos=7, max_len=12)
    beam = beam_search_n(m, src, bos=7, eos=7, max_len=12, beam_size=1)
    for g, b in zip(greedy, beam):
        assert g.tokens == b[0].tokens and g.score == pytest.approx(b[0].score, abs=1e-5)


@pytest.mark.parametrize("input_feeding", [False, True])
@torch.no_grad()
def test_a_beam_as_wide_as_the_vocabulary_is_exact_over_two_steps(input_feeding):
    """Over two steps a beam of V hypotheses keeps every first token, so its best and its n-best are those of
    all V*V continuations (a continuation that ends at the first step stays ended)."""
    V, eod = 6, 4
    m = model("dot", input_feeding, V=V)
    src = source([4])
    memory, state0 = m.encode(src)
    first, state1, _ = m.step(torch.tensor([eod]), state0, memory)
    first = first.log_softmax(1)[0]
    every = {}
    for a, b in itertools.product(range(V), range(V)):
        if a == eod:
            every[()] = float(first[a])
            continue
        second, _, _ = m.step(torch.tensor([a]), state1, memory)
        second = second.log_softmax(1)[0]
        every[(a,) if b == eod else (a, b)] = float(first[a] + second[b])
    ranked = sorted(every.items(), key=lambda kv: -kv[1])
    found = beam_search_n(m, src, bos=eod, eos=eod, max_len=2, beam_size=V, n_best=V)[0]
    assert [tuple(d.tokens) for d in found] == [k for k, _ in ranked[:V]]
    assert [d.score for d in found] == pytest.approx([v for _, v in ranked[:V]], abs=1e-5)


def test_learns_a_tiny_set_by_heart():
    pairs = [("cat", "K AE T"), ("dog", "D AO G"), ("ox", "AA K S"), ("tax", "T AE K S"), ("go", "G OW"),
             ("cod", "K AA D"), ("tag", "T AE G"), ("oat", "OW T")]
    tok = pair_tokenizer([s for s, _ in pairs], [t for _, t in pairs], "chars", "words")
    torch.manual_seed(0)
    m = Translator(TranslatorConfig(vocab_size=tok.vocab_size, source_vocab_size=tok.source.vocab_size,
                                    hidden_size=32, embedding_dim=16, attention_dim=16))
    ids = [tok.source.encode(s) for s, _ in pairs]
    from charrnn.core.batches import pad

    batch, lengths = pad(ids, tok.source.eod_id)
    gold = encode_targets([tok.target.encode(t) for _, t in pairs], tok.eod_id, tok.unk_id)
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    m.train()
    for _ in range(150):
        loss = translate_loss(m, batch, lengths, gold, tok.unk_id)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    assert loss.item() < 0.05
    for beam in (1, 3):
        out = translate_ids(m, tok, ids, beam_size=beam)
        assert [o[0].text for o in out] == [t for _, t in pairs]
        assert all(o[0].attention.shape == (len(o[0].tokens) + 1, len(s)) for o, (s, _) in zip(out, pairs))


def test_pair_tokenizer_round_trips_in_a_checkpoint_entry():
    tok = PairTokenizer(CharTokenizer.from_text("abc"), WordTokenizer.from_texts(["K AE T", "D AO G"], split="spaces"))
    again = tokenizer_from_dict(tok.to_dict())
    assert again == tok and again.vocab_size == 8 and again.target.decode(again.target.encode("AE K")) == "AE K"
    assert WordTokenizer.from_dict(WordTokenizer.from_texts(["a, b."]).to_dict()).split == "words"  # caption's
