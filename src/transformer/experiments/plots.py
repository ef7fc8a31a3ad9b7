"""Learning curves and attention maps as PNG files (matplotlib).

Curves: `plot_curves(run_dir)` reads `run_dir/metrics.jsonl` (one JSON object per line,
`"kind": "train"` or `"eval"`, each with a `"step"`) and writes into `run_dir/plots/`:
loss.png (training loss, lightly smoothed, and validation loss), lr.png (the learning
rate), and bleu.png / exact_match.png when the evaluations carry those keys.
`plot_losses(curves, path)` draws the training losses of several runs on one axes (the
ablation's figure).

Attention: `plot_attention(maps, src_tokens, tgt_tokens, out_dir)` draws the maps of one
sentence, {"encoder": [(H, S, S)], "decoder_self": [(H, T, T)], "cross": [(H, T, S)]}
(one per layer, as decoding/attention_maps.py's `collect_attention` gives them): one PNG
per kind and layer, one heatmap per head, queries down the rows, keys along the columns.

Figures are built with the object-oriented `matplotlib.figure.Figure`, which needs no
GUI backend and leaves pyplot's global state alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from ..errors import UserError
from ..training.metrics import METRICS_FILE, metric_series, read_metrics

SMOOTHING = 0.6  # weight of the past in the training-loss average: light, as TensorBoard's default
ATTENTION_KINDS = ("encoder", "decoder_self", "cross")  # also the order the maps are drawn in


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average, bias-corrected so the first points are not pulled to 0."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** i))
    return out


# --- learning curves ---------------------------------------------------------------

def plot_curves(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the learning-curve PNGs of a run; returns the paths written.

    A figure whose data are absent altogether is not drawn (lr.png from a log without
    "lr", bleu.png without "bleu"), rather than written empty.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS_FILE
    records = read_metrics(metrics_path)
    if not records:
        raise UserError(f"{metrics_path}: no records")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)

    written = []
    figure = _loss_figure(records)
    if figure is not None:
        written.append(_save(figure, out_dir / "loss.png"))
    steps, lrs = metric_series(records, "train", "lr")
    if steps:
        figure = _line_figure("learning rate", "learning rate")
        figure.axes[0].plot(steps, lrs, color="tab:green")
        written.append(_save(figure, out_dir / "lr.png"))
    for key, label in (("bleu", "BLEU"), ("exact_match", "exact match")):
        steps, values = metric_series(records, "eval", key)
        if steps:
            figure = _line_figure(f"validation {label}", label)
            ax = figure.axes[0]
            ax.plot(steps, values, marker="o", color="tab:orange", label=f"validation {label}")
            ax.set_ylim(bottom=0)  # a score read against zero, not against its own wiggles
            ax.legend()
            written.append(_save(figure, out_dir / f"{key}.png"))
    return written


def _loss_figure(records: list[dict]) -> Figure | None:
    """Training loss (raw, faint, and smoothed) and validation loss on one axes."""
    train_steps, train_loss = metric_series(records, "train", "loss")
    eval_steps, eval_loss = metric_series(records, "eval", "loss")
    if not train_steps and not eval_steps:
        return None
    figure = _line_figure("loss", "loss (cross-entropy, nats per token)")
    ax = figure.axes[0]
    if train_steps:
        # The raw curve stays visible behind the smoothed one, so smoothing hides nothing.
        ax.plot(train_steps, train_loss, color="tab:blue", alpha=0.25, linewidth=0.8)
        ax.plot(train_steps, smooth(train_loss), color="tab:blue", label="training (smoothed)")
    if eval_steps:
        # Evaluations are sparse: markers keep a single one visible.
        ax.plot(eval_steps, eval_loss, color="tab:orange", marker="o", label="validation")
    ax.legend()
    return figure


def plot_losses(curves: dict[str, tuple[list[int], list[float]]], path: str | Path) -> Path:
    """The training-loss curves {name: (steps, losses)} of several runs on one axes, log y."""
    figure = _line_figure("training loss by variant",
                          "training loss (label-smoothed, nats per token)")
    ax = figure.axes[0]
    for name, (steps, losses) in curves.items():
        if steps:
            ax.plot(steps, losses, label=name, linewidth=1.2)
    ax.set_yscale("log")
    # Plain numbers (0.5, 2, 3) on the log axis rather than 5 x 10^-1, 2 x 10^0.
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.grid(True, which="both", alpha=0.3)  # minor lines too: a log axis has few major ones
    ax.legend()
    return _save(figure, Path(path))


def _line_figure(title: str, ylabel: str) -> Figure:
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return figure


def _save(figure: Figure, path: Path, dpi: int = 120) -> Path:
    try:
        figure.savefig(path, dpi=dpi)
    except OSError as error:
        raise UserError(f"{path}: cannot write ({error.strerror})") from None
    return path


# --- attention maps ------------------------------------------------------------------

def plot_attention(maps: dict[str, list[torch.Tensor]], src_tokens: list[str],
                   tgt_tokens: list[str], out_dir: str | Path) -> list[Path]:
    """One PNG per kind and layer, e.g. attention-encoder-layer1.png; returns the paths.

    maps: as from `collect_attention`; any subset of its kinds. The tokens label the
    axes and must match the maps' sizes: S = len(src_tokens), T = len(tgt_tokens).
    """
    unknown = set(maps) - set(ATTENTION_KINDS)
    if unknown:
        raise ValueError(f"unknown attention kinds {sorted(unknown)}; expected {ATTENTION_KINDS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Which tokens sit on each axis: (queries down the rows, keys along the columns).
    axes_tokens = {
        "encoder": (src_tokens, src_tokens),
        "decoder_self": (tgt_tokens, tgt_tokens),
        "cross": (tgt_tokens, src_tokens),
    }
    written = []
    for kind in ATTENTION_KINDS:
        queries, keys = axes_tokens[kind]
        for number, weights in enumerate(maps.get(kind, []), start=1):
            _check_map_shape(kind, number, weights, queries, keys)
            figure = _attention_figure(kind, number, weights, queries, keys)
            name = f"attention-{kind.replace('_', '-')}-layer{number}.png"
            written.append(_save(figure, out_dir / name, dpi=100))
    return written


def _check_map_shape(kind: str, number: int, weights: torch.Tensor,
                     queries: list[str], keys: list[str]) -> None:
    if weights.dim() != 3 or tuple(weights.shape[1:]) != (len(queries), len(keys)):
        raise ValueError(
            f"{kind} layer {number}: weights of shape {tuple(weights.shape)} do not match "
            f"(H, {len(queries)}, {len(keys)}) from the tokens given"
        )


def _attention_figure(kind: str, number: int, weights: torch.Tensor,
                      queries: list[str], keys: list[str]) -> Figure:
    """A grid of heatmaps, one per head, with one shared 0-to-1 colour scale."""
    weights = weights.detach().float().cpu()  # (H, T_q, T_k); bfloat16 has no numpy type
    n_heads = weights.size(0)
    n_cols = min(n_heads, 4)
    n_rows = math.ceil(n_heads / n_cols)
    # About a quarter inch per token keeps 30 labels legible; small maps keep a floor.
    cell_w = max(3.0, 0.25 * len(keys) + 1.0)
    cell_h = max(3.0, 0.25 * len(queries) + 1.0)
    figure = Figure(figsize=(n_cols * cell_w + 1.0, n_rows * cell_h + 0.6), layout="constrained")
    grid = figure.subplots(n_rows, n_cols, squeeze=False)
    fontsize = 8 if max(len(queries), len(keys)) <= 20 else 7
    x_labels, y_labels = _tick_labels(keys), _tick_labels(queries)
    image = None
    for head, ax in enumerate(grid.flat):
        if head >= n_heads:
            ax.set_visible(False)  # the empty cells of an incomplete last row
            continue
        image = ax.imshow(weights[head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0,
                          aspect="auto", interpolation="nearest")
        ax.set_title(f"layer {number}, head {head + 1}", fontsize=10)
        ax.set_xticks(range(len(keys)), x_labels, rotation=90, fontsize=fontsize)
        ax.set_yticks(range(len(queries)), y_labels, fontsize=fontsize)
    figure.colorbar(image, ax=grid.ravel().tolist(), shrink=0.6, label="attention weight")
    figure.suptitle(_KIND_TITLES[kind])
    return figure


_KIND_TITLES = {
    "encoder": "encoder self-attention (rows: source queries, columns: source keys)",
    "decoder_self": "decoder self-attention (rows: target queries, columns: target keys)",
    "cross": "encoder-decoder attention (rows: target queries, columns: source keys)",
}


def _tick_labels(tokens: list[str]) -> list[str]:
    # A "$" would switch matplotlib to math mode and garble (or fail on) the label.
    return [str(token).replace("$", r"\$") for token in tokens]
