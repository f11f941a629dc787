"""Every family through the server against BERT of the same size, and against in-process
sentence-transformers on the same model; contenders interleaved round by round.

    python benchmarks/families.py                       # all families, 3 rounds (~10 minutes)
    python benchmarks/families.py --families roberta mpnet --rounds 5

Each family is a random model of all-MiniLM-L6-v2's size (6 layers, hidden 384, 12 heads, FFN
1536; ELECTRA with 128-wide embeddings projected up; Qwen3 with 6 query and 2 key/value heads
of 64), saved as a sentence-transformers folder with MiniLM's own tokenizer and pooling
(mean; last token for Qwen3), so every contender sees the same tokens and only the network
differs. Measured: bulk throughput (one ``BertClient.encode`` of N corpus sentences; in process
``SentenceTransformer.encode(batch_size=32)``), the BERT server measured in the same rounds.
Writes ``results.md`` and ``results.json`` into ``--out``, and every server's output into its ``logs/``.

    python benchmarks/families.py --network             # our networks alone, in one process

``--network`` times only the networks: ``Encoder.encode`` of each family in this process, all
interleaved round by round (no server, no sentence-transformers), which shows the speed per FLOP
with less noise than a run through servers on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import CORPUS, InProcess, Server, throughput  # noqa: E402

PATHS = {"bert": "packed", "roberta": "packed", "xlm-roberta": "packed", "distilbert": "packed",
         "electra": "packed", "mpnet": "packed", "modernbert": "generic", "deberta-v2": "generic",
         "qwen3": "generic"}


def build(name: str, folder: Path) -> Path:
    """A random model of MiniLM's size in a copy of MiniLM's sentence-transformers folder."""
    import torch
    import transformers

    from bert_serving.model.loading import default_model_dir

    torch.manual_seed(0)
    shutil.copytree(default_model_dir(), folder)
    for weights in ("model.safetensors", "pytorch_model.bin"):
        (folder / weights).unlink(missing_ok=True)
    size = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                intermediate_size=1536)
    if name == "bert":
        config = transformers.BertConfig(max_position_embeddings=512, **size)
    elif name in ("roberta", "xlm-roberta"):
        kind = transformers.RobertaConfig if name == "roberta" else transformers.XLMRobertaConfig
        config = kind(max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, **size)
    elif name == "distilbert":
        config = transformers.DistilBertConfig(vocab_size=30522, dim=384, n_layers=6, n_heads=12, hidden_dim=1536)
    elif name == "electra":
        config = transformers.ElectraConfig(embedding_size=128, max_position_embeddings=512, **size)
    elif name == "mpnet":
        config = transformers.MPNetConfig(max_position_embeddings=514, pad_token_id=1, **size)
    elif name == "modernbert":
        config = transformers.ModernBertConfig(**{**size, "num_attention_heads": 6}, max_position_embeddings=8192,
                                               pad_token_id=0, cls_token_id=101, sep_token_id=102, bos_token_id=101,
                                               eos_token_id=102)
    elif name == "deberta-v2":
        config = transformers.DebertaV2Config(**size, max_position_embeddings=512, relative_attention=True,
                                              position_buckets=256, pos_att_type=["p2c", "c2p"],
                                              position_biased_input=False, type_vocab_size=0)
    else:
        config = transformers.Qwen3Config(**{**size, "num_attention_heads": 6}, num_key_value_heads=2, head_dim=64,
                                          max_position_embeddings=32768, pad_token_id=0, tie_word_embeddings=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 384, "pooling_mode": "lasttoken"}))
    transformers.AutoModel.from_config(config).eval().save_pretrained(folder)
    return folder


def network(names: list[str], texts: list[str], rounds: int) -> str:
    """Each family's `Encoder` alone, interleaved: sentences/s, median of ``rounds``."""
    from bert_serving.model import Encoder

    with tempfile.TemporaryDirectory() as tmp:
        encoders = {name: Encoder.load(str(build(name, Path(tmp) / name)), device="cpu") for name in names}
        for encoder in encoders.values():
            encoder.encode(texts[:100], max_batch_tokens=1024)
        measured = {name: [] for name in names}
        for rnd in range(rounds):
            for name, encoder in (encoders.items() if rnd % 2 == 0 else reversed(encoders.items())):
                measured[name].append(throughput(lambda t: encoder.encode(t, max_batch_tokens=1024), texts))
            print(f"round {rnd + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:.0f}/s" for n, v in measured.items()),
                  flush=True)
    bert = statistics.median(measured["bert"])
    lines = ["| family | path | network alone, sentences/s | vs BERT |", "|---|---|---|---|"]
    lines += [f"| {name} | {PATHS[name]} | {statistics.median(v):.0f} | {statistics.median(v) / bert:.2f}x |"
              for name, v in measured.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=[n for n in PATHS if n != "bert"], choices=list(PATHS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bulk", type=int, default=1000, help="sentences per bulk measurement")
    parser.add_argument("--out", type=Path,
                        default=HERE / "results" / f"{datetime.now():%Y-%m-%d-%H%M}-families")
    parser.add_argument("--network", action="store_true", help="time the networks alone, in this process")
    args = parser.parse_args()
    bulk = CORPUS.read_text(encoding="utf-8").splitlines()[: args.bulk]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.network:
        table = network(["bert", *args.families], bulk, args.rounds)
        print(table)
        (args.out / "network.md").write_text(f"# Networks alone, {datetime.now():%Y-%m-%d %H:%M}\n\n{args.bulk} "
                                             f"sentences per call, median of {args.rounds} interleaved rounds.\n\n"
                                             f"{table}\n")
        return
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Server("-model_dir", str(build("bert", Path(tmp) / "bert")), logs=args.out / "logs")
        baseline.encode(bulk)
        try:
            for name in args.families:
                folder = str(build(name, Path(tmp) / name))
                server, inproc = Server("-model_dir", folder, logs=args.out / "logs"), InProcess(model_dir=folder)
                server.encode(bulk), inproc.encode(bulk)  # warm on the very batches measured, as the baseline is
                measured = results[name] = {"bert server": [], "server": [], "in process": []}
                try:
                    contenders = {"bert server": baseline.encode, "server": server.encode, "in process": inproc.encode}
                    for rnd in range(args.rounds):
                        order = list(contenders) if rnd % 2 == 0 else list(reversed(contenders))  # no one always first
                        for contender in order:
                            measured[contender].append(throughput(contenders[contender], bulk))
                        print(f"{name} round {rnd + 1}/{args.rounds}: " + ", ".join(
                            f"{k} {v[-1]:.0f}/s" for k, v in measured.items()), flush=True)
                finally:
                    server.close()
        finally:
            baseline.close()
    lines = ["| family | path | server, sentences/s | BERT server, same rounds | vs BERT | in-process "
             "sentence-transformers | vs in process |", "|---|---|---|---|---|---|---|"]
    for name, measured in results.items():
        med = {k: statistics.median(v) for k, v in measured.items()}
        lines.append(f"| {name} | {PATHS[name]} | {med['server']:.0f} | {med['bert server']:.0f} | "
                     f"{med['server'] / med['bert server']:.2f}x | {med['in process']:.0f} | "
                     f"{med['server'] / med['in process']:.2f}x |")
    table = "\n".join(lines)
    print(table)
    (args.out / "results.md").write_text(f"# Families, {datetime.now():%Y-%m-%d %H:%M}\n\n{args.bulk} sentences per "
                                         f"bulk call, median of {args.rounds} interleaved rounds.\n\n{table}\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
