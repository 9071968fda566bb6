"""Base model and default data resolution, offline: clear one-line errors, never a download."""

from __future__ import annotations

import io

import pytest

from weibo_senti import UserError, hub


def test_local_folder_is_used_as_is(tiny_base):
    assert hub.resolve_base_model(str(tiny_base)) == tiny_base


def test_missing_local_folder_is_named(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        hub.resolve_base_model(str(tmp_path / "nope"))


def test_unreachable_hub_says_to_pass_base_model(monkeypatch):
    import huggingface_hub

    def offline(*a, **k):
        raise huggingface_hub.errors.LocalEntryNotFoundError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UserError) as e:
        hub.resolve_base_model("uer/gpt2-chinese-cluecorpussmall")
    assert "--base-model PATH" in str(e.value) and "\n" not in str(e.value)


def test_default_data_offline_says_to_pass_data(monkeypatch, tmp_path):
    monkeypatch.setenv("WEIBO_SENTI_CACHE", str(tmp_path))

    def offline(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(hub.urllib.request, "urlopen", offline)
    with pytest.raises(UserError, match="pass --data PATH"):
        hub.default_data()


class FakeResponse(io.BytesIO):
    headers = {}

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_default_data_download_is_row_checked_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("WEIBO_SENTI_CACHE", str(tmp_path))
    body = "label,review\n" + "".join(f"{i % 2},文本{i}\n" for i in range(5))
    monkeypatch.setattr(hub.urllib.request, "urlopen", lambda *a, **k: FakeResponse(body.encode()))
    with pytest.raises(UserError, match="has 5 rows, expected 119988"):
        hub.default_data()
    assert not (tmp_path / "weibo_senti_100k.csv").exists()
    monkeypatch.setattr(hub, "WEIBO_SENTI_ROWS", 5)
    path = hub.default_data()
    assert path.read_text(encoding="utf-8") == body

    def no_network(*a, **k):
        raise AssertionError("downloaded twice")

    monkeypatch.setattr(hub.urllib.request, "urlopen", no_network)
    assert hub.default_data() == path
