"""explain: integrated gradients over the token embeddings, spread onto characters."""

from __future__ import annotations

import pytest

pytest.importorskip("captum", reason="explain needs the [explain] extra (captum)")


@pytest.mark.parametrize("method", ["lora", "adapter", "full"])
def test_attributions_are_complete_and_cover_every_character(trained_runs, method):
    from weibo_senti.explain import explain
    from weibo_senti.predict import SentimentClassifier

    clf = SentimentClassifier.load(trained_runs[method], precision="fp32")
    text = "好棒我的喜爱差的了"
    ex = explain(clf, text)
    assert [c for c, _ in ex.chars] == list(text)
    delta = ex.logit_difference - ex.baseline_difference
    assert abs(ex.attribution_sum - delta) <= 0.05 * abs(delta)
    assert ex.completeness_gap <= 0.05
    pred = clf.predict([text])[0]
    assert ex.label == pred.label and ex.score == pytest.approx(pred.score, abs=1e-4)


def test_the_sentiment_characters_carry_the_attribution(trained_runs):
    """On the tiny task the label is which sentiment characters occur: they must outweigh the
    neutral filler, with the sign of their label."""
    from conftest import NEGATIVE, POSITIVE

    from weibo_senti.explain import explain
    from weibo_senti.predict import SentimentClassifier

    clf = SentimentClassifier.load(trained_runs["full"], precision="fp32")
    ex = explain(clf, "我好的棒了人喜是")
    positive = [v for c, v in ex.chars if c in POSITIVE]
    neutral = [abs(v) for c, v in ex.chars if c not in POSITIVE + NEGATIVE]
    assert ex.label == "positive"
    assert sum(positive) > 0 and sum(positive) > sum(neutral)


def test_bf16_classifier_is_explained_in_fp32_and_int8_is_refused(trained_runs):
    from weibo_senti.errors import UserError
    from weibo_senti.explain import explain
    from weibo_senti.predict import SentimentClassifier

    ex = explain(SentimentClassifier.load(trained_runs["lora"], precision="bf16"), "好棒")
    assert ex.completeness_gap <= 0.05
    with pytest.raises(UserError, match="int8"):
        explain(SentimentClassifier.load(trained_runs["full"], precision="int8"), "好棒")
    with pytest.raises(UserError, match="empty"):
        explain(SentimentClassifier.load(trained_runs["full"], precision="fp32"), "  ")


def test_long_posts_are_explained_as_the_model_read_them(trained_runs):
    from weibo_senti.explain import explain
    from weibo_senti.predict import SentimentClassifier

    clf = SentimentClassifier.load(trained_runs["full"], precision="fp32")
    # A real post repeated, not one character 500 times: on 40 identical tokens the integral is
    # so sharp that 2,048 steps may not converge (gap 4.07 at 2,048, 0.74 at 8,192 steps on one
    # trained tiny model), which says nothing about truncation.
    text = "今天天气很好，心情也不错。" * 40
    ex = explain(clf, text)
    assert ex.truncated and 0 < len(ex.chars) < len(text)
    assert ex.completeness_gap <= 0.05


def test_long_posts_wrap_in_the_figure(tmp_path):
    pytest.importorskip("matplotlib", reason="figures need the [compare] extra")
    from PIL import Image

    from weibo_senti.explain import Explanation
    from weibo_senti.report import plot_explanations

    def fake(n):
        chars = [("好", (-1) ** i * 0.1) for i in range(n)]
        return Explanation(
            "好" * n, "positive", 0.9, "positive", chars, [], 1.0, 0.0, 1.0, 0.0, False
        )

    sizes = {}
    for n in (10, 300):
        png = tmp_path / f"{n}.png"
        plot_explanations([fake(n)], ["run"], png)
        with Image.open(png) as image:
            sizes[n] = image.size
    assert sizes[300][0] <= sizes[10][0] * 4.5  # 40 characters a line at most
    assert sizes[300][1] > 3 * sizes[10][1] * 0.8  # 8 lines instead of one
