"""ONNX Runtime as the CPU engine (onnx_runtime.py): an exact graph at every shape, fp32 and int8
answers that agree with torch's fp32, one export per model, a clear line where the extra is
missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_bank import TEXTS

from weibo_senti import inference, onnx_runtime, runfolder
from weibo_senti.errors import UserError
from weibo_senti.predict import SentimentClassifier

needs_ort = pytest.mark.skipif(
    onnx_runtime.missing() is not None, reason=f"ONNX Runtime: {onnx_runtime.missing()}"
)


@needs_ort
def test_exported_graph_is_exact_at_every_batch_and_length(trained_runs, tmp_path):
    import onnx
    import onnxruntime as ort

    model = inference.fuse_gelu(runfolder.load_full_model(trained_runs["full"])).eval()
    onnx_runtime.export_fp32(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    for rows, width in [(1, 1), (1, 7), (3, 17), (16, 40)]:  # none of them the traced (2, 16)
        ids = torch.randint(1, model.config.vocab_size, (rows, width), generator=gen)
        ids[0, width // 2 + 1 :] = 0  # a right-padded row
        ids[-1, 1:] = 0  # one real token (rows == 1: the first row again)
        mask = (ids != 0).long()
        if width > 2:  # a [PAD] id inside a text: pad_batch's mask attends to it
            ids[0, 1], mask[0, 1] = 0, 1
        got = session.run(None, {"input_ids": ids.numpy()})[0]
        with torch.inference_mode():
            want = model(input_ids=ids, attention_mask=mask).logits.numpy()
        assert np.abs(got - want).max() < 1e-4, (rows, width)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert "Attention" in ops and not ops & {"Transpose", "Softmax", "Where"}  # one fused op


@needs_ort
def test_the_pooled_graph_runs_adapters_and_a_model_it_does_not_fit_gets_the_plain_one(
    trained_runs, tmp_path, monkeypatch
):
    model = SentimentClassifier.load(trained_runs["adapter"], precision="fp32").bank.fold().eval()
    assert any(getattr(b, "senti_active", None) for b in model.transformer.h)  # adapters on
    clf = onnx_runtime.OrtClassifier(_exported(model, tmp_path / "pooled.onnx"), threads=1)
    assert clf.inputs == ["input_ids"]  # the pooled graph
    ids = torch.randint(
        1, model.config.vocab_size, (4, 9), generator=torch.Generator().manual_seed(1)
    )
    ids[1:, 5:] = 0
    mask = (ids != 0).long()
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask).logits
    assert (clf(ids, mask) - want).abs().max() < 1e-4
    with pytest.raises(ValueError, match="right-padded"):
        clf(ids.flip(1), mask.flip(1))

    def no_attention_op(*args, **kwargs):  # an older torch or onnxruntime
        raise NotImplementedError("Attention(23)")

    monkeypatch.setattr(torch.onnx.ops, "attention", no_attention_op)
    older = onnx_runtime.OrtClassifier(_exported(model, tmp_path / "older.onnx"), threads=1)
    assert older.inputs == ["input_ids", "attention_mask"]
    assert (older(ids, mask) - want).abs().max() < 1e-4
    monkeypatch.undo()
    real_forward = onnx_runtime._PooledLogits.forward
    monkeypatch.setattr(  # a graph that exports and runs but is wrong: the probe catches it
        onnx_runtime._PooledLogits, "forward", lambda self, ids: real_forward(self, ids) + 0.01
    )
    caught = onnx_runtime.OrtClassifier(_exported(model, tmp_path / "caught.onnx"), threads=1)
    assert caught.inputs == ["input_ids", "attention_mask"]
    monkeypatch.undo()
    model.config.add_cross_attention = True  # a layout the pooled graph does not cover
    plain = onnx_runtime.OrtClassifier(_exported(model, tmp_path / "plain.onnx"), threads=1)
    assert plain.inputs == ["input_ids", "attention_mask"]
    assert (plain(ids, mask) - want).abs().max() < 1e-4


def _exported(model, path):
    onnx_runtime.export_fp32(model, path)
    return path


@needs_ort
@pytest.mark.parametrize("method", ["full", "lora"])
def test_onnxruntime_int8_agrees_with_fp32_and_is_exported_once(
    trained_runs, method, tmp_path, monkeypatch
):
    monkeypatch.setenv("WEIBO_SENTI_CACHE", str(tmp_path))
    exports = []
    real = onnx_runtime.export
    monkeypatch.setattr(onnx_runtime, "export", lambda m, t: exports.append(t) or real(m, t))
    want = SentimentClassifier.load(trained_runs[method], precision="fp32").predict_proba(TEXTS)
    for _ in range(2):
        clf = SentimentClassifier.load(trained_runs[method], precision="int8")
        assert clf.engine == "onnxruntime"
        got = clf.predict_proba(TEXTS)
        assert isinstance(clf._copies["ort-int8"], onnx_runtime.OrtClassifier)
        assert (got.argmax(1) == want.argmax(1)).all()
        assert np.abs(got - want).max() < 0.05
    assert len(exports) == 1  # the second load found the cached file
    files = list((tmp_path / "onnx").glob("*/model-int8.onnx"))
    assert len(files) == 1 and not list((tmp_path / "onnx").glob(".*"))  # no temp folder left
    fp32 = SentimentClassifier.load(trained_runs[method], precision="fp32")
    got = fp32.predict_proba(TEXTS)  # the same export's fp32 graph
    assert list(fp32._copies) == ["ort-fp32"] and len(exports) == 1
    assert np.abs(got - want).max() < 1e-5


@needs_ort
def test_int8_quantizes_the_weight_matmuls_and_leaves_the_embeddings(trained_runs, tmp_path):
    import onnx

    model = inference.fuse_gelu(runfolder.load_full_model(trained_runs["full"])).eval()
    onnx_runtime.export(model, tmp_path)
    graph = onnx.load(str(tmp_path / onnx_runtime.FILES["int8"])).graph
    ops = [n.op_type for n in graph.node]
    int8 = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
    assert "DynamicQuantizeLinear" in ops and ops.count("MatMulInteger") >= 4 * 2  # 2 layers
    gathers = [n for n in graph.node if n.op_type == "Gather"]
    assert gathers and not any(n.input[0] in int8 for n in gathers)  # embeddings stay fp32
    assert "DequantizeLinear" not in ops


def _saturating_matmul(path):
    """One fp32 MatMul whose int8 form, with full-range weights, saturates a u8 x s8 kernel
    without VNNI: inputs in [0, 1] quantize to 255, weights +-1 to +-127 (one scale per
    channel), so every pair of products is 2 * 255 * 127 = 64770 > 32767."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.ones((64, 16), np.float32)
    w[:, 1::2] = -1.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "saturating",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return w


@needs_ort
def test_int8_matmul_is_right_on_this_cpu_even_where_u8s8_saturates(tmp_path):
    """The real kernel: full-range int8 weights (the v4 export) are off by 49% here on a CPU
    without VNNI (AVX2-only EPYC), whatever the model; the weights quantize() writes are not."""
    import onnxruntime as ort

    w = _saturating_matmul(tmp_path / "mm.onnx")
    onnx_runtime.quantize(tmp_path / "mm.onnx", tmp_path / "mm8.onnx")
    session = ort.InferenceSession(str(tmp_path / "mm8.onnx"), providers=["CPUExecutionProvider"])
    for rows in (1, 4):  # ONNX Runtime's GEMV and GEMM kernels
        x = np.ones((rows, 64), np.float32)
        x[:, 0] = 0.0  # the zero point at 0: every other input quantizes to 255
        got = session.run(None, {"x": x})[0]
        assert np.abs(got - x @ w).max() < 0.01 * np.abs(x @ w).max(), rows
    features = inference.cpu_features()
    if "avx2" in features:  # ONNX Runtime picks the kernel by CPUID, as torch does
        vnni = features & {"vnni", "amx_tile"}
        assert onnx_runtime.int8_weight_bits() == (8 if vnni else 7)


@needs_ort
def test_int8_weights_take_the_range_the_cpu_computes_exactly(trained_runs, tmp_path, monkeypatch):
    """Any CPU, simulated: 8-bit weights where the kernel is exact, 7-bit (|q| <= 64, so
    2 * 255 * 64 = 32640 fits int16) where it saturates; each has its own cache key."""
    import onnx
    from onnx import numpy_helper

    model = inference.fuse_gelu(runfolder.load_full_model(trained_runs["full"])).eval()
    onnx_runtime.export_fp32(model, tmp_path / "m.onnx")
    keys = set()
    for bits, peak in ((8, 127), (7, 64)):
        monkeypatch.setattr(onnx_runtime, "int8_weight_bits", lambda bits=bits: bits)
        onnx_runtime.quantize(tmp_path / "m.onnx", tmp_path / f"m{bits}.onnx")
        graph = onnx.load(str(tmp_path / f"m{bits}.onnx")).graph
        weights = [
            numpy_helper.to_array(t).astype(np.int32)
            for t in graph.initializer
            if t.data_type == onnx.TensorProto.INT8
        ]
        assert len(weights) >= 4 * 2 and max(abs(w).max() for w in weights) == peak, bits
        keys.add(onnx_runtime.model_key(model))
    assert len(keys) == 2  # a cache shared by two CPU kinds never hands one the other's file


@needs_ort
def test_int8_is_refused_in_one_line_where_no_weight_range_is_exact(trained_runs, monkeypatch):
    monkeypatch.setattr(onnx_runtime, "int8_weight_bits", lambda: 0)
    clf = SentimentClassifier.load(trained_runs["full"], precision="int8")
    with pytest.raises(UserError, match="not exact on this CPU.*WEIBO_SENTI_ENGINE=torch"):
        clf.predict(TEXTS)
    torch_int8 = SentimentClassifier.load(trained_runs["full"], precision="int8", engine="torch")
    assert len(torch_int8.predict(TEXTS)) == len(TEXTS)  # the way out it names works


@needs_ort
def test_another_model_gets_its_own_export_and_an_emptied_one_is_redone(trained_runs, tmp_path):
    full = runfolder.load_full_model(trained_runs["full"]).eval()
    path = onnx_runtime.cached_export(full, tmp_path)
    first = full.score.weight.detach().clone()
    with torch.no_grad():
        full.score.weight.add_(1.0)
    other = onnx_runtime.cached_export(full, tmp_path)
    assert other != path and (other / "model-int8.onnx").is_file()
    (path / "model-fp32.onnx").unlink()  # a folder someone half emptied
    with torch.no_grad():
        full.score.weight.copy_(first)  # the first weights again: the first key
    assert onnx_runtime.cached_export(full, tmp_path) == path
    assert (path / "model-fp32.onnx").is_file()


def test_engine_choice(monkeypatch):
    assert inference.cpu_engine("torch") == "torch"
    with pytest.raises(UserError, match=r"engine \(WEIBO_SENTI_ENGINE\) must be one of"):
        inference.cpu_engine("tensorrt")
    monkeypatch.setattr(onnx_runtime, "missing", lambda: "pip install 'weibo-senti[onnx]'")
    assert inference.cpu_engine("auto") == "torch"  # falls back without the extra
    with pytest.raises(UserError, match=r"weibo-senti\[onnx\]"):
        inference.cpu_engine("onnxruntime")


def test_torch_int8_engine_still_agrees_with_fp32(trained_runs):
    want = SentimentClassifier.load(trained_runs["full"], precision="fp32").predict_proba(TEXTS)
    clf = SentimentClassifier.load(trained_runs["full"], precision="int8", engine="torch")
    got = clf.predict_proba(TEXTS)
    assert isinstance(clf._copies["torch-int8"], inference.TorchInt8)
    assert (got.argmax(1) == want.argmax(1)).all() and np.abs(got - want).max() < 0.05


@needs_ort
def test_an_unwritable_cache_gets_one_line(trained_runs, tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("WEIBO_SENTI_CACHE", str(blocked))  # mkdir under a file fails
    clf = SentimentClassifier.load(trained_runs["full"], precision="int8")
    with pytest.raises(UserError, match="WEIBO_SENTI_CACHE.*WEIBO_SENTI_ENGINE=torch"):
        clf.predict(TEXTS)


from test_multitask import label_runs  # noqa: E402, F401  (a fixture: runs of 3 and 6 labels)


@needs_ort
@pytest.mark.parametrize("labels", ["three", "six"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_onnxruntime_answers_any_number_of_labels_like_torch(
    label_runs,  # noqa: F811
    labels,
    method,
    tmp_path,
    monkeypatch,
):
    """The graph's output is as wide as the run's head: ONNX Runtime's fp32 and int8 agree
    with torch's fp32 within the tolerances above, on every label; torch's int8 (7-bit
    activations, about twice ONNX Runtime's error here) within 3% of the largest logit."""
    monkeypatch.setenv("WEIBO_SENTI_CACHE", str(tmp_path))
    run = label_runs(labels, method)
    width = {"three": 3, "six": 6}[labels]
    fp32_torch = SentimentClassifier.load(run, precision="fp32", engine="torch")
    want, logits = fp32_torch.predict_proba(TEXTS), fp32_torch.predict_logits(TEXTS)[0]
    assert want.shape == (len(TEXTS), width)
    fp32 = SentimentClassifier.load(run, precision="fp32", engine="onnxruntime")
    got = fp32.predict_proba(TEXTS)
    assert isinstance(fp32._copies["ort-fp32"], onnx_runtime.OrtClassifier)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
    int8 = SentimentClassifier.load(run, precision="int8", engine="onnxruntime")
    got = int8.predict_proba(TEXTS)
    assert isinstance(int8._copies["ort-int8"], onnx_runtime.OrtClassifier)
    assert got.shape == want.shape and np.abs(got - want).max() < 0.05
    assert [p.label for p in int8.predict(TEXTS)] == [fp32.labels[k] for k in want.argmax(1)]
    torch_int8 = SentimentClassifier.load(run, precision="int8", engine="torch")
    got = torch_int8.predict_logits(TEXTS)[0]
    assert isinstance(torch_int8._copies["torch-int8"], inference.TorchInt8)
    assert got.shape == logits.shape
    assert np.abs(got - logits).max() < 0.03 * np.abs(logits).max()
