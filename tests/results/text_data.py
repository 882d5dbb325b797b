"""Build ``fortunes``, a real labelled text (tf-idf) data set, from Debian's ``fortunes``.

    apt-get install fortunes                      # the data: /usr/share/games/fortunes
    .venv/bin/python tests/results/text_data.py [OUT_DIR]   # default ~/.cache/deepcluster-data

The papers cluster Reuters tf-idf features; no news corpus can be had from this machine's
package registries, so this is the text set of ``make results``. Fortune-cookie files are
sorted by their curators into subject files; the eight subject files below (computers,
politics, science, startrek, law, food, drugs, sports) are the classes, at most 200 entries
each, drawn with a fixed seed. Features as DEC's Reuters-10k: tf-idf of the 2,000 most
frequent words (English stop words out, sublinear tf, rows L2-normalised).

Writes ``fortunes.npy`` (float32), ``fortunes.labels.npy`` (int64), ``fortunes.parquet``
(columns ``f0..``, ``label``) and ``fortunes.vocab.txt`` (the word of each column), through
``setfiles.save_set``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from setfiles import save_set  # noqa: E402

SOURCE = Path("/usr/share/games/fortunes")
CLASSES = ("computers", "politics", "science", "startrek", "law", "food", "drugs", "sports")
PER_CLASS = 200
WORDS = 2000


def entries(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return [t.strip() for t in text.split("\n%\n") if t.strip()]


def build(source: Path = SOURCE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    docs: list[str] = []
    labels: list[int] = []
    for k, name in enumerate(CLASSES):
        items = entries(source / name)
        keep = sorted(rng.permutation(len(items))[:PER_CLASS])
        docs += [items[i] for i in keep]
        labels += [k] * len(keep)
    tfidf = TfidfVectorizer(max_features=WORDS, stop_words="english", sublinear_tf=True)
    x = tfidf.fit_transform(docs).toarray().astype(np.float32)
    return x, np.asarray(labels, dtype=np.int64), list(tfidf.get_feature_names_out())


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache" / "deepcluster-data"
    missing = [name for name in CLASSES if not (SOURCE / name).exists()]
    if missing:
        print(f"error: {SOURCE} lacks {', '.join(missing)}; run `apt-get install fortunes`",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)
    x, y, vocab = build()
    vocab_file = {"fortunes.vocab.txt": lambda f: f.write("\n".join(vocab).encode() + b"\n")}
    save_set(out, "fortunes", x, y, extra=vocab_file)
    print(f"fortunes: {x.shape[0]} x {x.shape[1]}, {len(CLASSES)} classes -> {out}")


if __name__ == "__main__":
    main()
