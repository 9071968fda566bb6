"""`explain`: why a post got its label — Captum's integrated gradients over the token embeddings,
spread onto the characters of the post.

The attributed quantity, for a target label t, is t's logit minus the mean of the other labels'
logits (for two labels simply logit[t] - logit[other]; the logits are the calibrated head's), so
a character's score is positive when it pushed the post toward t. The target is ``label`` when
given; else, for two labels, the second ("positive": the scores then read the same whichever
label won), for more the predicted label. The baseline is the same number of `[PAD]` embeddings
with the position embeddings untouched, so only *which* tokens were there is explained.
Completeness: the attributions add up to F(post) - F(baseline); the relative gap is reported
with every explanation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .errors import UserError
from .predict import SentimentClassifier, check_unicode

DEFAULT_STEPS = 64


@dataclass
class Explanation:
    text: str  # as explained (cut to max_length tokens when truncated)
    label: str  # the predicted label
    score: float  # calibrated probability of the predicted label
    toward: str  # the explained label: positive attributions push toward it
    chars: list[tuple[str, float]]  # every character of `text` and its attribution
    tokens: list[tuple[str, float]]  # the model's tokens and their attributions
    logit_difference: float  # F(post): logit[toward] - mean of the other logits
    baseline_difference: float  # F(all [PAD])
    attribution_sum: float
    completeness_gap: float  # |sum - (F(post) - F(baseline))| / |F(post) - F(baseline)|
    truncated: bool
    adapter: str | None = None
    steps: int = 0  # integration steps used
    toward_score: float | None = None  # calibrated probability of the explained label
    quantity: str = ""  # F in words, e.g. "logit[positive] - logit[negative]"

    def to_dict(self) -> dict:
        return asdict(self)


def target_score(logits: torch.Tensor, target: int) -> torch.Tensor:
    """The attributed quantity per row: logit[target] minus the mean of the other logits
    (for two labels, logit[target] - logit[other])."""
    others = torch.cat([logits[:, :target], logits[:, target + 1 :]], 1)
    return (logits[:, target] - others.mean(1)).float()


def describe_quantity(labels: list[str], target: int) -> str:
    if len(labels) == 2:
        return f"logit[{labels[target]}] - logit[{labels[1 - target]}]"
    return f"logit[{labels[target]}] - mean of the other {len(labels) - 1} labels' logits"


def explain(
    clf: SentimentClassifier,
    text: str,
    adapter: str | None = None,
    steps: int = DEFAULT_STEPS,
    tolerance: float = 0.05,
    max_steps: int = 2048,
    label: str | None = None,
) -> Explanation:
    """Per-character attributions of one post (fp32, whatever precision ``clf`` predicts in),
    toward ``label`` (default: the second of two labels, the predicted one of more).

    Starts with ``steps`` integration steps and doubles them (up to ``max_steps``) until the
    attributions add up to F(post) - F(baseline) within ``tolerance``; the gap is reported."""
    from captum.attr import LayerIntegratedGradients

    text = _check(clf, text, steps, max_steps)
    names = clf._row_adapters(adapter, 1)
    labels = clf.labels_of(names[0])  # the answering adapter's labels, in its head's order
    if label is not None and label not in labels:
        raise UserError(
            f"cannot explain toward {label!r}: the run's labels are {', '.join(labels)}"
        )
    enc = clf.tokenizer(
        text, truncation=True, return_offsets_mapping=True, return_overflowing_tokens=True
    )
    ids = torch.tensor([enc["input_ids"][0]], device=clf.device)
    mask = torch.ones_like(ids)
    forward = _forward(clf, names)
    with torch.no_grad():
        logits = forward(ids, mask)[0].float()
    # two labels: toward the second ("positive"), whichever won; more: the predicted one
    target = labels.index(label) if label else 1 if len(labels) == 2 else int(logits.argmax())

    def quantity(input_ids, attention_mask):
        return target_score(forward(input_ids, attention_mask), target)

    baseline = torch.full_like(ids, clf.tokenizer.pad_token_id)
    f_post, f_base = _ends(clf, quantity, ids, mask, baseline)
    ig = LayerIntegratedGradients(quantity, clf.model.get_input_embeddings())
    while True:  # a sharp path needs more steps: double them until the sums add up
        attributions = ig.attribute(
            ids,
            baselines=baseline,
            additional_forward_args=(mask,),
            n_steps=steps,
            internal_batch_size=32,
        )
        per_token = attributions.sum(-1)[0].detach().float().cpu().tolist()
        gap = abs(sum(per_token) - (f_post - f_base)) / max(abs(f_post - f_base), 1e-6)
        if gap <= tolerance or steps * 2 > max_steps:
            break
        steps *= 2
    ex = _assemble(clf, text, enc, per_token, (f_post, f_base), logits, labels, target)
    ex.adapter, ex.steps = names[0], steps
    return ex


def _check(clf, text: str, steps: int, max_steps: int) -> str:
    """The post, stripped; refused before any pass: empty, int8, steps out of range."""
    text = text.strip()
    check_unicode([text])
    if not text:
        raise UserError("nothing to explain: the text is empty")
    if clf.precision == "int8":
        raise UserError("int8 weights have no gradients: load the run with precision fp32 or bf16")
    if not 1 <= steps <= max_steps:
        raise UserError(f"steps must be between 1 and {max_steps}")
    return text


def _forward(clf, names: list[str]):
    def logits(input_ids, attention_mask):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if clf.bank is None:
            return clf.model(**batch).logits
        return clf.bank.forward(batch, names * len(input_ids))

    return logits


def _ends(clf, quantity, ids, mask, baseline) -> tuple[float, float]:
    """F(post) and F(baseline) as integrated gradients sees them: [PAD] embeddings, but the
    post's ids, which decide the pooled position (GPT2ForSequenceClassification pools on the
    last non-[PAD] id)."""
    embeddings = clf.model.get_input_embeddings()
    with torch.no_grad():
        f_post = float(quantity(ids, mask)[0])
        pads = embeddings(baseline)
        hook = embeddings.register_forward_hook(lambda module, args, output: pads)
        try:
            f_base = float(quantity(ids, mask)[0])
        finally:
            hook.remove()
    return f_post, f_base


def _assemble(clf, text, enc, per_token, ends, logits, labels, target) -> Explanation:
    offsets = enc["offset_mapping"][0]
    end = max((e for _, e in offsets), default=0)
    truncated = len(enc["input_ids"]) > 1
    shown = text[:end] if truncated else text
    chars = [0.0] * len(shown)
    for (start, stop), value in zip(offsets, per_token):
        for i in range(start, stop):  # a token's score shared evenly by its characters
            chars[i] += value / (stop - start)
    tokens = clf.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    f_post, f_base = ends
    total, delta = sum(per_token), f_post - f_base
    probs = logits.double().softmax(-1).tolist()
    k = max(range(len(probs)), key=probs.__getitem__)
    return Explanation(
        text=shown,
        label=labels[k],
        score=probs[k],
        toward=labels[target],
        chars=list(zip(shown, chars)),
        tokens=list(zip(tokens, per_token)),
        logit_difference=f_post,
        baseline_difference=f_base,
        attribution_sum=total,
        completeness_gap=abs(total - delta) / max(abs(delta), 1e-6),
        truncated=truncated,
        toward_score=probs[target],
        quantity=describe_quantity(labels, target),
    )


def render_console(ex: Explanation):
    """The post as rich Text: green behind characters that pushed toward the explained label
    (``ex.toward``), red away from it; the stronger, the deeper."""
    from rich.text import Text

    peak = max((abs(v) for _, v in ex.chars), default=0.0) or 1.0
    out = Text()
    for char, value in ex.chars:
        strength = min(1.0, abs(value) / peak)
        level = int(40 + 180 * strength)
        colour = f"rgb(0,{level},0)" if value > 0 else f"rgb({level},0,0)"
        out.append(char, style=f"bold white on {colour}" if strength > 0.05 else "")
    return out


def summary_lines(ex: Explanation, top: int = 5, tolerance: float = 0.05) -> list[str]:
    words = [
        (t, v) for t, v in ex.tokens if not (t.startswith("[") and t.endswith("]") and len(t) > 2)
    ]
    special = sum(v for t, v in ex.tokens if (t, v) not in words)
    ranked = sorted(words, key=lambda t: -abs(t[1]))[:top]
    shown = "" if ex.toward_score is None else f" (p={ex.toward_score:.4f})"
    toward = f"'{ex.toward}'{shown}"
    lines = [
        f"label: {ex.label} (p={ex.score:.4f}); green/positive scores pushed toward "
        f"{toward}, red/negative away from it",
        f"explained: {ex.quantity or 'the logit difference'}",
        "strongest tokens: "
        + ", ".join(f"{tok} {value:+.3f}" for tok, value in ranked)
        + f"; [CLS]/[SEP] together {special:+.3f}",
    ]
    if ex.truncated:
        lines.append(
            f"note: the post was cut to the model's max length: only its first {len(ex.text)} "
            "characters were read (shown above)"
        )
    gap = f"{100 * ex.completeness_gap:.2f}%"
    lines.append(
        f"completeness: attributions sum {ex.attribution_sum:+.4f}, F(post) "
        f"{ex.logit_difference:+.4f} minus baseline {ex.baseline_difference:+.4f} "
        f"= {ex.logit_difference - ex.baseline_difference:+.4f} (gap {gap}, {ex.steps} steps)"
    )
    if ex.completeness_gap > tolerance:
        lines.append(f"warning: the attributions are not complete (gap {gap} > 5%): read with care")
    return lines
