"""`explain`: why a post got its label — Captum's integrated gradients over the token embeddings,
spread onto the characters of the post.

The attributed quantity is the logit difference (second label minus first: toward "positive"),
so a character's score is positive when it pushed the post toward positive. The baseline is the
same number of `[PAD]` embeddings with the position embeddings untouched, so only *which* tokens
were there is explained. Completeness: the attributions add up to F(post) - F(baseline); the
relative gap is reported with every explanation.
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
    label: str
    score: float  # calibrated probability of the label
    toward: str  # the label positive attributions push toward
    chars: list[tuple[str, float]]  # every character of `text` and its attribution
    tokens: list[tuple[str, float]]  # the model's tokens and their attributions
    logit_difference: float  # F(post): logit[toward] - logit[other]
    baseline_difference: float  # F(all [PAD])
    attribution_sum: float
    completeness_gap: float  # |sum - (F(post) - F(baseline))| / |F(post) - F(baseline)|
    truncated: bool
    adapter: str | None = None
    steps: int = 0  # integration steps used

    def to_dict(self) -> dict:
        return asdict(self)


def explain(
    clf: SentimentClassifier,
    text: str,
    adapter: str | None = None,
    steps: int = DEFAULT_STEPS,
    tolerance: float = 0.05,
    max_steps: int = 2048,
) -> Explanation:
    """Per-character attributions of one post (fp32, whatever precision ``clf`` predicts in).

    Starts with ``steps`` integration steps and doubles them (up to ``max_steps``) until the
    attributions add up to the logit difference within ``tolerance``; the gap is reported."""
    from captum.attr import LayerIntegratedGradients

    text = text.strip()
    check_unicode([text])
    if not text:
        raise UserError("nothing to explain: the text is empty")
    if len(clf.labels) != 2:
        raise UserError("explain needs a two-label run")
    if clf.precision == "int8":
        raise UserError("int8 weights have no gradients: load the run with precision fp32 or bf16")
    if not 1 <= steps <= max_steps:
        raise UserError(f"steps must be between 1 and {max_steps}")
    enc = clf.tokenizer(
        text, truncation=True, return_offsets_mapping=True, return_overflowing_tokens=True
    )
    ids = torch.tensor([enc["input_ids"][0]], device=clf.device)
    mask = torch.ones_like(ids)
    offsets = enc["offset_mapping"][0]
    names = clf._row_adapters(adapter, 1)

    def logit_difference(input_ids, attention_mask):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if clf.bank is None:
            logits = clf.model(**batch).logits
        else:
            logits = clf.bank.forward(batch, names * len(input_ids))
        return (logits[:, 1] - logits[:, 0]).float()

    baseline = torch.full_like(ids, clf.tokenizer.pad_token_id)
    embeddings = clf.model.get_input_embeddings()
    ig = LayerIntegratedGradients(logit_difference, embeddings)
    with torch.no_grad():
        f_post = float(logit_difference(ids, mask)[0])
        # The baseline as IG sees it: [PAD] embeddings, but the post's ids, which decide the
        # pooled position (GPT2ForSequenceClassification pools on the last non-[PAD] id).
        pads = embeddings(baseline)
        hook = embeddings.register_forward_hook(lambda module, args, output: pads)
        try:
            f_base = float(logit_difference(ids, mask)[0])
        finally:
            hook.remove()
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
    ex = _assemble(clf, text, enc, offsets, per_token, f_post, f_base, names[0])
    ex.steps = steps
    return ex


def _assemble(clf, text, enc, offsets, per_token, f_post, f_base, adapter) -> Explanation:
    end = max((e for _, e in offsets), default=0)
    truncated = len(enc["input_ids"]) > 1
    shown = text[:end] if truncated else text
    chars = [0.0] * len(shown)
    for (start, stop), value in zip(offsets, per_token):
        for i in range(start, stop):  # a token's score shared evenly by its characters
            chars[i] += value / (stop - start)
    tokens = clf.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    total = sum(per_token)
    delta = f_post - f_base
    prob_toward = float(torch.tensor([f_post]).sigmoid())
    k = 1 if f_post >= 0 else 0
    return Explanation(
        text=shown,
        label=clf.labels[k],
        score=prob_toward if k == 1 else 1 - prob_toward,
        toward=clf.labels[1],
        chars=list(zip(shown, chars)),
        tokens=list(zip(tokens, per_token)),
        logit_difference=f_post,
        baseline_difference=f_base,
        attribution_sum=total,
        completeness_gap=abs(total - delta) / max(abs(delta), 1e-6),
        truncated=truncated,
        adapter=adapter,
    )


def render_console(ex: Explanation):
    """The post as rich Text: green behind characters that pushed toward the second label
    (positive), red toward the first; the stronger, the deeper."""
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
    lines = [
        f"label: {ex.label} (p={ex.score:.4f}); green/positive scores pushed toward "
        f"'{ex.toward}', red/negative away from it",
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
        f"completeness: attributions sum {ex.attribution_sum:+.4f}, logit difference "
        f"{ex.logit_difference:+.4f} minus baseline {ex.baseline_difference:+.4f} "
        f"= {ex.logit_difference - ex.baseline_difference:+.4f} (gap {gap}, {ex.steps} steps)"
    )
    if ex.completeness_gap > tolerance:
        lines.append(f"warning: the attributions are not complete (gap {gap} > 5%): read with care")
    return lines
