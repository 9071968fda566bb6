"""Methods, parameter counts, the bottleneck adapter, and loading checks."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2ForSequenceClassification

from weibo_senti import TrainConfig, UserError, adapters, modeling, runfolder


def gpt2_small_on_meta():
    with torch.device("meta"):  # counting needs shapes, not memory
        return GPT2ForSequenceClassification(modeling.gpt2_small_config())


@pytest.mark.parametrize(
    "method,trainable,total",
    [
        # LoRA r=8: per layer c_attn 8*(768+2304) + attn.c_proj 8*(768+768)
        # + mlp.c_proj 8*(3072+768) = 67,584; x12 + score head 768*2.
        ("lora", 12 * 67_584 + 1_536, None),
        # adapter 64: per layer 768*64+64 + 64*768+768 = 99,136; x12 + head.
        ("adapter", 12 * 99_136 + 1_536, 102_070_272 + 12 * 99_136),
        ("full", 102_070_272, 102_070_272),
    ],
)
def test_trainable_parameters_of_gpt2_small(method, trainable, total):
    model = modeling.apply_method(gpt2_small_on_meta(), TrainConfig(method=method))
    t, a = modeling.count_parameters(model)
    assert t == trainable
    if total:
        assert a == total
    assert "trainable%" in modeling.describe_parameters(model)


def tiny_classifier(tiny_base):
    tok = runfolder.load_tokenizer(tiny_base, max_length=40)
    return modeling.load_base_classifier(tiny_base, tok), tok


def test_base_classifier_pads_with_pad_token(tiny_base):
    model, tok = tiny_classifier(tiny_base)
    assert model.config.pad_token_id == tok.pad_token_id == 0
    assert model.config.id2label == {0: "negative", 1: "positive"}


def test_adapter_starts_as_identity_and_can_be_switched_off(tiny_base):
    model, tok = tiny_classifier(tiny_base)
    model.eval()
    x = tok(["好的人", "差"], padding=True, return_tensors="pt")
    before = model(**x).logits
    adapters.add_adapter(model, "a", 8)
    assert torch.equal(model(**x).logits, before)  # up-projection starts at zero
    for block in adapters.blocks(model):
        torch.nn.init.normal_(block.senti_adapters["a"].up.weight)
    changed = model(**x).logits
    assert not torch.allclose(changed, before)
    adapters.set_active(model, None)
    assert torch.equal(model(**x).logits, before)
    adapters.set_active(model, "a")
    assert torch.equal(model(**x).logits, changed)
    with pytest.raises(UserError, match="no adapter 'b'"):
        adapters.set_active(model, "b")


def test_tokenizer_that_does_not_fit_the_model_is_refused(tiny_base, tmp_path):
    from transformers import BertTokenizer

    # The trap: vocab_file= is ignored and a 5-token vocabulary comes out.
    broken = BertTokenizer(vocab_file=str(tiny_base / "vocab.txt"))
    model, _ = tiny_classifier(tiny_base)
    with pytest.raises(UserError, match="do not belong together"):
        modeling.check_tokenizer_fits(broken, model.config)


def test_auto_precision_follows_the_hardware(monkeypatch):
    from weibo_senti import inference

    cpu = torch.device("cpu")
    monkeypatch.setattr(inference, "cpu_has_fast_bf16", lambda: True)
    assert inference.resolve("auto", cpu) == "bf16"
    monkeypatch.setattr(inference, "cpu_has_fast_bf16", lambda: False)
    assert inference.resolve("auto", cpu) == "fp32"
    assert inference.resolve("int8", cpu) == "int8"


def test_fast_dropout_drops_at_the_rate_scales_and_replays():
    from weibo_senti.modeling import FastDropout

    drop = FastDropout(0.1)
    x = torch.ones(1000, 1001)  # not a multiple of 4 elements
    torch.manual_seed(0)
    y = drop(x)
    assert abs((y == 0).float().mean().item() - 0.1) < 0.002
    lanes = (y == 0).flatten()[:1_000_000].view(-1, 4).float().mean(0)  # 4 draws per number
    assert torch.all((lanes - 0.1).abs() < 0.004), lanes
    assert abs(y.mean().item() - 1.0) < 0.005  # kept values scaled: the expectation stays
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # the global generator: seeds and resume replay it
    x.requires_grad_(True)
    torch.manual_seed(0)
    drop(x).sum().backward()
    assert torch.equal(x.grad, y)  # d(out)/d(x) = mask x scale
    drop.eval()
    assert drop(x) is x
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))
    assert FastDropout(0.0).train()(x) is x


@pytest.mark.parametrize("method", ["lora", "adapter", "full"])
def test_training_on_a_cpu_uses_fast_dropout_everywhere(tiny_base, method):
    from weibo_senti import TrainConfig, runfolder
    from weibo_senti.modeling import FastDropout, apply_method, fast_dropout, load_base_classifier

    tok = runfolder.load_tokenizer(tiny_base, max_length=40)
    model = fast_dropout(
        apply_method(load_base_classifier(tiny_base, tok), TrainConfig(method=method))
    )
    kinds = [type(m) for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert kinds and all(k is FastDropout for k in kinds)
    lora = [
        m for n, m in model.named_modules() if "lora_dropout" in n and isinstance(m, FastDropout)
    ]
    assert bool(lora) == (method == "lora")


def _bf16_steps(tiny_base, method: str, speedup=None, steps: int = 4) -> list[float]:
    from weibo_senti import TrainConfig
    from weibo_senti.modeling import apply_method, fast_dropout
    from weibo_senti.modeling import load_base_classifier as load

    tok = runfolder.load_tokenizer(tiny_base, max_length=40)
    torch.manual_seed(0)
    model = fast_dropout(apply_method(load(tiny_base, tok), TrainConfig(method=method)))
    if speedup is not None:
        speedup(model)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        ids = torch.randint(1, len(tok), (8, 12), generator=gen)
        labels = torch.randint(0, 2, (8,), generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_frozen_base_in_bf16_trains_the_same_steps_under_autocast(tiny_base, method):
    from weibo_senti.modeling import frozen_weights_in_bf16

    def cast(model):
        frozen_weights_in_bf16(model)
        frozen = [p for p in model.parameters() if p.dtype == torch.bfloat16]
        assert frozen and not any(p.requires_grad for p in frozen)
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)

    assert _bf16_steps(tiny_base, method, cast) == _bf16_steps(tiny_base, method)


def test_lora_inputs_left_in_bf16_train_the_same_steps_under_autocast(tiny_base):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from weibo_senti.modeling import lora_inputs_in_autocast_dtype

    def uncast(model):
        lora_inputs_in_autocast_dtype(model)
        layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        assert layers and not any(m.cast_input_dtype_enabled for m in layers)

    assert _bf16_steps(tiny_base, "lora", uncast) == _bf16_steps(tiny_base, "lora")


def test_eager_attention_only_while_training_and_never_saved(tiny_base, tmp_path):
    from weibo_senti import TrainConfig
    from weibo_senti.modeling import apply_method, eager_attention_while_training
    from weibo_senti.modeling import load_base_classifier as load

    tok = runfolder.load_tokenizer(tiny_base, max_length=40)
    torch.manual_seed(0)  # the score head is new: the same one in both
    plain = load(tiny_base, tok).eval()
    torch.manual_seed(0)
    model = apply_method(load(tiny_base, tok), TrainConfig(method="full"))
    eager_attention_while_training(model)
    ids = torch.randint(1, len(tok), (2, 9), generator=torch.Generator().manual_seed(0))
    model.train()(input_ids=ids)
    assert model.config._attn_implementation == "eager"
    with torch.no_grad():
        logits = model.eval()(input_ids=ids).logits
        assert model.config._attn_implementation == plain.config._attn_implementation == "sdpa"
        assert torch.allclose(logits, plain(input_ids=ids).logits, atol=1e-6)
    model.train()(input_ids=ids)
    model.save_pretrained(tmp_path)  # saved mid-training: the stored config is untouched
    assert "eager" not in (tmp_path / "config.json").read_text()


@pytest.mark.parametrize(
    ("method", "precision", "processes", "cast"),
    [
        ("lora", "bf16", 1, True),
        ("adapter", "bf16", 1, True),
        ("full", "bf16", 1, False),
        ("lora", "no", 1, False),
        ("lora", "bf16", 2, False),
    ],
)
def test_cpu_training_speedups_cast_only_a_frozen_base_under_bf16(
    tiny_base, method, precision, processes, cast
):
    from types import SimpleNamespace

    from weibo_senti import TrainConfig
    from weibo_senti.modeling import FastDropout, apply_method, load_base_classifier
    from weibo_senti.train import cpu_training_speedups

    tok = runfolder.load_tokenizer(tiny_base, max_length=40)
    cfg = TrainConfig(method=method)
    model = apply_method(load_base_classifier(tiny_base, tok), cfg)
    acc = SimpleNamespace(
        device=torch.device("cpu"), mixed_precision=precision, num_processes=processes
    )
    cpu_training_speedups(model, cfg, acc)
    assert any(isinstance(m, FastDropout) for m in model.modules())
    assert any(p.dtype == torch.bfloat16 for p in model.parameters()) == cast
