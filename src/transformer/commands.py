"""The commands that use a finished (or running) run directory: translate, evaluate,
average, plot; and `data`, which downloads a corpus. `train` lives in cli.py next to
the argument parser, since it is where recipes and flags are merged.

Which weights: `--checkpoint DIR` if given, else RUN_DIR/checkpoints/averaged (written
by `average`), else best (highest validation BLEU or exact match), else the latest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import TransformerConfig
from .errors import UserError
from .model import Transformer


def pick_checkpoint(run_dir: Path, explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    for name in ("averaged", "best"):
        if (run_dir / "checkpoints" / name).is_dir():
            return run_dir / "checkpoints" / name
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        raise UserError(f"{run_dir}: no checkpoint found in {run_dir / 'checkpoints'}")
    return latest


def load_run(run_dir: str, checkpoint: str | None = None, device: str = "cpu"):
    """(model in eval mode, tokenizer or None, saved config dict) from a run directory."""
    from .cli import read_run_config
    from .train import resolve_device

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    saved = read_run_config(run_dir)
    try:
        cfg = TransformerConfig(**saved["model"])
    except (TypeError, ValueError, KeyError) as error:
        raise UserError(f"{run_dir / 'config.json'}: invalid model config ({error})") from None
    model = Transformer(cfg)
    ckpt.load_weights(pick_checkpoint(run_dir, checkpoint), model)
    model.to(resolve_device(device)).eval()
    tokenizer = None
    if (run_dir / "tokenizer.json").exists():
        from .data.tokenizer import Tokenizer
        tokenizer = Tokenizer.load(run_dir / "tokenizer.json")
    return model, tokenizer, saved


def _needs_tokenizer(tokenizer, run_dir) -> None:
    if tokenizer is None:
        raise UserError(f"{run_dir}: has no tokenizer.json (a synthetic-task run cannot translate text)")


def read_input(args) -> list[str]:
    from .data.parallel import read_lines
    if args.sentences and args.input:
        raise UserError("translate: give sentences as arguments or --input FILE, not both")
    if args.sentences:
        return [s.strip() for s in args.sentences]
    if args.input and args.input != "-":
        try:
            return read_lines(args.input)
        except UserError as error:
            if "file is empty" in str(error):
                return []
            raise
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise UserError(f"<stdin>:{line}: not valid UTF-8") from None
    return [line.strip() for line in text.split("\n")[:-1 if text.endswith("\n") else None]]


def translate(args) -> int:
    from .data.translation import translate_texts
    model, tokenizer, saved = load_run(args.run_dir, args.checkpoint, args.device)
    _needs_tokenizer(tokenizer, args.run_dir)
    train = saved["train"]
    outputs = translate_texts(model, tokenizer, read_input(args), args.beam,
                              train.get("length_penalty", 0.6), train.get("max_len_a", 1.0),
                              train.get("max_len_b", 50), next(model.parameters()).device)
    for line in outputs:
        print(line)
    return 0


def evaluate(args) -> int:
    from .data.parallel import load_multi30k, read_parallel
    from .data.translation import translate_texts
    from .evaluate import corpus_bleu
    model, tokenizer, saved = load_run(args.run_dir, args.checkpoint, args.device)
    _needs_tokenizer(tokenizer, args.run_dir)
    train = saved["train"]
    if args.src or args.ref:
        if not (args.src and args.ref):
            raise UserError("evaluate: give both --src and --ref, or neither")
        pairs, name = read_parallel(args.src, args.ref), args.src
    else:
        pairs, name = load_multi30k(args.split, train["src_lang"], train["tgt_lang"],
                                    args.data_dir or train.get("data_dir") or None), args.split
    hypotheses = translate_texts(model, tokenizer, [s for s, _ in pairs], args.beam,
                                 train.get("length_penalty", 0.6), train.get("max_len_a", 1.0),
                                 train.get("max_len_b", 50), next(model.parameters()).device)
    score, signature = corpus_bleu(hypotheses, [t for _, t in pairs])
    if args.output:
        Path(args.output).write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    print(f"BLEU = {score:.2f}  ({name}, {train['src_lang']}->{train['tgt_lang']}, "
          f"beam {args.beam}, {len(pairs)} sentences)")
    print(f"signature: {signature}")
    return 0


def average(args) -> int:
    from .averaging import save_average
    run_dir = Path(args.run_dir)
    if args.last < 1:
        raise UserError(f"--last {args.last}: must be at least 1")
    paths = ckpt.list_checkpoints(run_dir)
    if not paths:
        raise UserError(f"{run_dir}: no checkpoints to average")
    chosen = paths[-args.last:]
    out = save_average(run_dir, chosen)
    print(f"averaged {len(chosen)} checkpoints ({', '.join(p.name for p in chosen)}) into {out}")
    return 0


def plot(args) -> int:
    from .plots import plot_curves
    run_dir = Path(args.run_dir)
    written = plot_curves(run_dir)
    if args.attention is not None:
        written += plot_attention_for(run_dir, args.attention, args.checkpoint)
    for path in written:
        print(path)
    return 0


def plot_attention_for(run_dir: Path, sentence: str, checkpoint: str | None) -> list[Path]:
    """Decode `sentence`, then draw every attention map of the forward pass that scores it."""
    from .data.batching import collate
    from .decoding import greedy_decode
    from .plots import collect_attention, plot_attention, recording_attention
    model, tokenizer, saved = load_run(str(run_dir), checkpoint)
    cfg = model.cfg
    if tokenizer is not None:
        src_ids, bos, eos = tokenizer.encode(sentence), tokenizer.bos_id, tokenizer.eos_id
        show = lambda ids: [tokenizer.inner.id_to_token(i) for i in ids]  # noqa: E731
    else:  # synthetic task: the sentence is symbols, e.g. "3 1 4 1 5"
        from .data.synthetic import FIRST_SYMBOL
        try:
            src_ids = [int(t) + FIRST_SYMBOL for t in sentence.split()]
        except ValueError:
            raise UserError(f"--attention {sentence!r}: a synthetic-task run takes numbers, e.g. '3 1 4'") from None
        symbols = cfg.src_vocab_size - FIRST_SYMBOL
        for token in sentence.split():
            if not 0 <= int(token) < symbols:
                raise UserError(f"--attention {sentence!r}: symbol {token} is not one of this "
                                f"run's symbols, 0 to {symbols - 1}")
        bos, eos = 1, 2
        show = lambda ids: [str(i - FIRST_SYMBOL) if i >= FIRST_SYMBOL else ["<pad>", "<bos>", "<eos>", "<unk>"][i] for i in ids]  # noqa: E731
    if not src_ids or len(src_ids) >= cfg.max_len:
        raise UserError(f"--attention: the sentence must have 1 to {cfg.max_len - 1} tokens")
    src = collate([(src_ids, [])], cfg.pad_id, bos, eos)[0]
    hyp = greedy_decode(model, src, cfg.max_len - 2, bos, eos)[0]
    tgt_in = torch.tensor([[bos] + hyp])
    with recording_attention(model), torch.no_grad():
        model(src, tgt_in)
        maps = collect_attention(model)
    return plot_attention(maps, show(src[0].tolist()), show(tgt_in[0].tolist()), run_dir / "plots")


def data(args) -> int:
    from .data.parallel import download_multi30k
    for path in download_multi30k(args.out):
        print(path)
    return 0


def ablate(args) -> int:
    from .ablate import command_ablate
    return command_ablate(args)
