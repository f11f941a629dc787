"""Build benchmarks/corpus.txt: English sentences of 5-70 word pieces, from the docstrings of
Python's standard library (PSF License 2.0, which allows redistribution with its notice).

    python benchmarks/make_corpus.py        # rewrites corpus.txt deterministically

Varied, real sentences (not random words) so that length bucketing is measured on the kind of
length spread users send.
"""

from __future__ import annotations

import ast
import random
import re
import sys
import sysconfig
from pathlib import Path

from bert_serving.model.encoder import EncoderSettings, resolve

OUT = Path(__file__).with_name("corpus.txt")
SIZE = 5000
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def docstrings(root: Path):
    for path in sorted(root.rglob("*.py")):
        if any(part in ("test", "tests", "idlelib", "lib2to3", "site-packages") for part in path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    yield doc


def sentences(doc: str):
    for paragraph in doc.split("\n\n"):
        text = " ".join(paragraph.split())
        if not text or text.startswith(">>>") or "::" in text or text.count("(") > 3:
            continue
        yield from _SENTENCE_END.split(text)


def main() -> None:
    tokenizer = resolve(EncoderSettings(max_seq_len=512)).tokenizer()
    seen, kept = set(), []
    for doc in docstrings(Path(sysconfig.get_paths()["stdlib"])):
        for sentence in sentences(doc):
            if sentence in seen or not sentence[0].isupper() or not sentence.endswith((".", "?", "!")):
                continue
            seen.add(sentence)
            pieces = tokenizer.encode([sentence]).num_tokens - 2
            if 5 <= pieces <= 70:
                kept.append(sentence)
    random.Random(20261121).shuffle(kept)
    kept = kept[:SIZE]
    OUT.write_text("\n".join(kept) + "\n", encoding="utf-8")
    lengths = sorted(tokenizer.encode(kept).lengths - 2)
    print(f"{len(kept)} sentences from Python {sys.version.split()[0]}'s standard library; word pieces: "
          f"min {lengths[0]}, median {lengths[len(lengths) // 2]}, mean {sum(lengths) / len(lengths):.1f}, "
          f"max {lengths[-1]}", file=sys.stderr)


if __name__ == "__main__":
    main()
