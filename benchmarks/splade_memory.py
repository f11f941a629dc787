"""SPLADE's memory for one batch, on a 30,522-word vocabulary: the peak resident memory a forward
pass adds, each way measured in a fresh process (resident memory sampled every millisecond while
the batch runs, less what was resident before it).

    python benchmarks/splade_memory.py               # 32 texts x 128 tokens, MiniLM-shaped (6 x 384)
    python benchmarks/splade_memory.py --texts 64 --tokens 256

Ways:
- ``bert-serving``: `Encoder.embed_outputs`, the masked-LM head on the packed tokens a chunk at a
  time (`lexical.SPLADE_CHUNK_BYTES` of logits), each chunk max-pooled into the ``[texts,
  vocabulary]`` block at once;
- ``bert-serving, whole batch at once``: the same code with one chunk for all tokens: the
  ``[tokens, vocabulary]`` matrix of the batch, built whole;
- ``SparseEncoder.encode``: sentence-transformers, the reference (padded ``[texts, tokens,
  vocabulary]`` logits, then SpladePooling), its ``batch_size`` the same texts;
- ``the backbone alone``: our network's forward pass without the head, what every way above
  spends before it (its activations).

The model: MiniLM-shaped BERT with a masked-LM head at random init over all-MiniLM-L6-v2's
vocabulary (`synthetic`), its output bias lowered so that a text gets about as many non-zero
weights as a trained SPLADE gives (a few hundred), saved as a SparseEncoder; the texts are words of the benchmark corpus
cut to ``--tokens`` word pieces. Torch runs one thread. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus.txt"


def build(folder: Path) -> Path:
    """A MiniLM-shaped SPLADE model (random masked-LM head) as a SparseEncoder folder."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    sys.path.insert(0, str(HERE))
    from synthetic import SHAPES, vocab_dir

    torch.manual_seed(0)
    raw = folder.with_name(folder.name + "-mlm")
    model = BertForMaskedLM(BertConfig(vocab_size=30522, **SHAPES["minilm-shaped"]))
    with torch.no_grad():  # as sparse as a trained SPLADE's: ~100-300 of 30,522 weights > 0 per text (random: half)
        model.cls.predictions.bias.fill_(-1.2)
    model.save_pretrained(raw)
    BertTokenizerFast.from_pretrained(str(vocab_dir())).save_pretrained(raw)
    SparseEncoder(modules=[Transformer(str(raw), transformer_task="fill-mask", max_seq_length=512),
                           SpladePooling("max")], device="cpu").save(str(folder))
    return folder


def texts(count: int, tokens: int) -> list[str]:
    words = CORPUS.read_text(encoding="utf-8").split()
    return [" ".join(words[i * tokens : (i + 1) * tokens]) for i in range(count)]  # >= tokens word pieces each


_MEASURE = """
import ctypes, gc, json, os, sys, threading, time
import torch
torch.set_num_threads(1)
folder, way, count, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, sys.argv[5])
from splade_memory import texts
batch = texts(count, tokens)
if way == "SparseEncoder.encode":
    from sentence_transformers import SparseEncoder
    model = SparseEncoder(folder, device="cpu")
    model.max_seq_length = tokens
    run = lambda data: model.encode(data, batch_size=count, convert_to_tensor=True)
else:
    from bert_serving.model import Encoder, lexical
    from bert_serving.model.packing import Packing
    if way.endswith("at once"):
        lexical.SPLADE_CHUNK_BYTES = 1 << 40
    encoder = Encoder.load(folder, device="cpu", max_seq_len=tokens)
    run = lambda data: encoder.embed_outputs(encoder.tokenizer.encode(data), 2)
    if way == "the backbone alone":
        def run(data):
            f = encoder.tokenizer.encode(data)
            with torch.inference_mode():
                return encoder.model(torch.from_numpy(f.input_ids).long(), torch.from_numpy(f.type_ids).long(),
                                     Packing.from_lengths(f.lengths), encoder.spec.output_layers)
run(batch[:2])  # warm-up: weights touched, allocator primed
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)
before, peak, running = rss(), [0], [True]
def sample():
    while running[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.001)
watcher = threading.Thread(target=sample)
watcher.start()
started = time.perf_counter()
run(batch)
seconds = time.perf_counter() - started
running[0] = False
watcher.join()
print(json.dumps({"added_mib": (max(peak[0], rss()) - before) / 1024**2, "seconds": seconds}))
"""

WAYS = ("bert-serving", "bert-serving, whole batch at once", "SparseEncoder.encode", "the backbone alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(Path(tmp) / "splade-minilm")
        found = {}
        for way in WAYS:
            done = subprocess.run([sys.executable, "-c", _MEASURE, str(folder), way, str(args.texts), str(args.tokens),
                                   str(HERE)], capture_output=True, text=True, check=True)
            found[way] = json.loads(done.stdout.strip().splitlines()[-1])
    matrix = args.texts * args.tokens * 30522 * 4 / 1024**2
    print(f"SPLADE, MiniLM-shaped (6 x 384), 30,522-word vocabulary; {args.texts} texts x {args.tokens} tokens "
          f"(the [tokens, vocabulary] float32 logits: {matrix:.0f} MiB); torch 1 thread\n")
    print("| way | memory added by the batch (peak RSS) | seconds |\n|---|---|---|")
    for way, result in found.items():
        print(f"| {way} | {result['added_mib']:.0f} MiB | {result['seconds']:.2f} |")


if __name__ == "__main__":
    main()
