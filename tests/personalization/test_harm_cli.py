"""`railguard harm eval` / `personalize-eval` output contract (one JSON object on stdout), bad inputs, bench."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from personalization.cli import app
from personalization.evaluate import DEV_EVAL_PATH, load_jsonl

runner = CliRunner()
EVAL_KEYS = {"n", "precision", "recall", "f1", "fpr", "accuracy", "texts_per_s", "per_label"}
PERS_KEYS = {"block_new_success", "block_new_other_fpr", "unblock_success", "unblock_other_recall",
             "variation_success"}


def _json(result) -> dict:
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def test_eval_bad_inputs(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "spam"}\n{"text": 5, "label": "x"}\n')
    r = runner.invoke(app, ["eval", "--data", str(bad), "--json"])
    assert r.exit_code == 2 and "bad.jsonl:2" in _json(r)["error"]
    r = runner.invoke(app, ["eval", "--data", str(tmp_path / "missing.jsonl"), "--json"])
    assert r.exit_code == 2 and "error" in _json(r)
    r = runner.invoke(app, ["eval", "--data", str(bad), "--backend", "magic", "--json"])
    assert r.exit_code == 2 and "unknown backend" in _json(r)["error"]
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"text": "a", "label": "spam"}\n')
    for args, match in ([["--backend", "icl", "--retrieval", "bogus"], "unknown retrieval"],
                        [["--limit", "0"], "--limit"], [["--only", "nosuchcat"], "unknown categories"]):
        r = runner.invoke(app, ["eval", "--data", str(ok), "--json", *args])
        assert r.exit_code == 2 and match in _json(r)["error"], args
    for label in ("1", "null", "true", '["spam"]', '{"spam": 1}'):  # a label that is no string: the line named
        bad.write_text('{"text": "a", "label": "spam"}\n{"text": "b", "label": ' + label + '}\n')
        r = runner.invoke(app, ["eval", "--data", str(bad), "--json"])
        assert r.exit_code == 2 and "bad.jsonl:2: expected" in _json(r)["error"], label
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "a", "label": "spam"}\n{"text": "  ", "label": "benign"}\n')
    r = runner.invoke(app, ["eval", "--data", str(empty), "--json"])
    assert r.exit_code == 2 and "empty.jsonl:2: text is empty" in _json(r)["error"]
    lone = tmp_path / "lone.jsonl"  # valid JSON, but no text the tokenizer (or `railguard check`) accepts
    lone.write_text('{"text": "a", "label": "spam"}\n{"text": "hi\\ud800", "label": "benign"}\n')
    r = runner.invoke(app, ["eval", "--data", str(lone), "--json"])
    assert r.exit_code == 2 and "lone.jsonl:2: text contains an unpaired surrogate" in _json(r)["error"]


@pytest.mark.model
def test_eval_refuses_labels_no_category_could_have_and_unwritable_plots_up_front(tmp_path):
    """"Benign" or "" used to be scored as a harmful user category no detector can flag; a --plot that cannot
    be written used to fail only after the scoring."""
    for label in ("Benign", "", "benign ", "harmful"):
        f = tmp_path / "l.jsonl"
        f.write_text(json.dumps({"text": "hello there", "label": label}) + "\n")
        r = runner.invoke(app, ["eval", "--data", str(f), "--json"])
        assert r.exit_code == 2 and "l.jsonl:1: label must be" in _json(r)["error"], label
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"text": "a", "label": "spam"}\n')
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    (tmp_path / "dir.png").mkdir()
    for plot, match in ((not_a_dir / "roc.png", "does not exist"), (tmp_path, "must end with one of"),
                        (tmp_path / "dir.png", "is a directory"), (tmp_path / "roc.txt", "must end with one of")):
        r = runner.invoke(app, ["eval", "--data", str(ok), "--json", "--plot", str(plot)])
        assert r.exit_code == 2 and match in _json(r)["error"]
    for args in (["--max-per-label", "0"], ["--max-per-label", "-1"], ["--shots", "0"]):
        r = runner.invoke(app, ["personalize-eval", "--json", "--no-variation", *args])
        assert r.exit_code == 2 and "must be ≥ 1" in _json(r)["error"], args


def test_eval_json_and_plot(tmp_path):
    rows = load_jsonl(DEV_EVAL_PATH)
    sample = [r for lab, k in (("benign", 16), ("spam", 8), ("toxic", 8), ("negative", 8))
              for r in [x for x in rows if x["label"] == lab][:k]]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sample))
    png = tmp_path / "curve.png"
    r = runner.invoke(app, ["eval", "--data", str(data), "--json", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    out = _json(r)
    assert EVAL_KEYS <= set(out) and out["n"] == 40 and png.stat().st_size > 1000
    from guardrails.models.devices import encoder_int8

    assert out["encoder"].startswith("all-minilm-l6-v2+lora-") and out["encoder_int8"] is encoder_int8("cpu")
    assert {"benign", "spam", "toxic", "negative"} <= set(out["per_label"])


@pytest.mark.model
def test_eval_scope_follows_the_file_labels(tmp_path):
    """A spam corpus scores the spam category only (the paper's per-dataset protocol); --scope profile scores
    every active category; --only overrides both; an unknown scope is a typed CLI error."""
    rows = load_jsonl(DEV_EVAL_PATH)
    sample = [r for lab in ("benign", "spam") for r in [x for x in rows if x["label"] == lab][:10]]
    data = tmp_path / "spam.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sample))
    out = _json(runner.invoke(app, ["eval", "--data", str(data), "--json"]))
    assert out["scope"] == "labels" and out["active_categories"] == ["spam"]
    out = _json(runner.invoke(app, ["eval", "--data", str(data), "--json", "--scope", "profile"]))
    assert out["scope"] == "profile" and out["active_categories"] == ["negative", "spam", "toxic"]
    out = _json(runner.invoke(app, ["eval", "--data", str(data), "--json", "--only", "toxic"]))
    assert out["scope"] == "only" and out["active_categories"] == ["toxic"]
    r = runner.invoke(app, ["eval", "--data", str(data), "--json", "--scope", "everything"])
    assert r.exit_code == 2 and "unknown scope" in _json(r)["error"]


@pytest.mark.model
def test_personalize_eval_json():
    r = runner.invoke(app, ["personalize-eval", "--json", "--max-per-label", "12"])
    assert r.exit_code == 0, r.output
    out = _json(r)
    assert PERS_KEYS <= set(out)
    assert out["unblock_success"] == 1.0  # deterministic policy mask
    # the mask touches no other category: each keeps its own recall on its own texts
    assert out["unblock_other_own_recall"] == out["default_other_own_recall"]
    assert 0.0 < out["unblock_other_own_recall"] <= 1.0


@pytest.mark.model
def test_unblock_success_is_measured_on_the_detector_path(monkeypatch):
    """unblock_success reads the harm detector's findings: with the mask broken (unblock leaves the category
    enforcing) it drops below 1, so the 1.0 the CLI reports is a measurement, not a definition."""
    from personalization import EmbeddingBackend, profile_ops
    from personalization.evaluate import personalize_eval

    backend = EmbeddingBackend()
    ok = personalize_eval(backend, max_per_label=12, seeds=(0,), variation=False)
    assert ok["unblock_success"] == 1.0
    monkeypatch.setattr(profile_ops, "unblock", lambda profile, name: profile)  # broken: the category still enforces
    broken = personalize_eval(backend, max_per_label=12, seeds=(0,), variation=False)
    assert broken["unblock_success"] < 0.5, broken["per_category"]
    monkeypatch.undo()
    from guardrails.decision import Action
    from personalization.plugin import HarmDetector

    real = HarmDetector.findings

    def unmasked(self, scores, profile, note="", i=0):  # a broken mask in the detector: an allowed category blocks
        return [f.model_copy(update={"action": Action.BLOCK}) if f.score >= f.threshold else f
                for f in real(self, scores, profile, note, i)]

    monkeypatch.setattr(HarmDetector, "findings", unmasked)
    mask_broken = personalize_eval(backend, max_per_label=12, seeds=(0,), variation=False)
    assert mask_broken["unblock_success"] < 0.5, mask_broken["per_category"]  # the metric reads the detector


@pytest.mark.model
def test_bench_keys():
    from guardrails.models.devices import encoder_autocast_bf16
    from personalization.bench import bench

    out = bench(quick=True)
    assert out["embed_texts_per_s"] > 0
    assert out["embed_texts_per_s_default_profile"] > 0 and out["embed_encoder_only_texts_per_s"] > 0
    # the dtype the run actually used is reported, and it is the process-wide encoder policy
    assert out["embed_autocast_bf16"] is encoder_autocast_bf16("cpu")
    from guardrails.models.devices import encoder_int8
    from guardrails.models.quantize import int8_engine_available

    assert out["embed_int8"] is encoder_int8("cpu")  # the process-wide policy (opt-in: RAILGUARD_CPU_INT8=1)
    if int8_engine_available():
        assert out["embed_int8_over_fp32"] > 0


def test_eval_profile_that_is_not_utf8_is_a_typed_error(tmp_path):
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"text": "a", "label": "spam"}\n')
    prof = tmp_path / "p.json"
    prof.write_bytes(b'{"categories": {"c": {"examples": ["caf\xe9"]}}}')
    r = runner.invoke(app, ["eval", "--data", str(ok), "--json", "--profile", str(prof)])
    assert r.exit_code == 2 and "not valid UTF-8" in _json(r)["error"]


def test_personalize_eval_on_benign_text_only_is_an_error_not_null_metrics(tmp_path):
    benign = tmp_path / "benign.jsonl"
    benign.write_text("".join(json.dumps({"text": t, "label": "benign", "task": "spam"}) + "\n"
                              for t in ("see you at lunch", "ok thanks", "call me later")))
    r = runner.invoke(app, ["personalize-eval", "--data", str(benign), "--json"])
    assert r.exit_code == 2 and "no harmful label" in _json(r)["error"]


def test_eval_refuses_icl_options_for_the_embedding_backend(tmp_path):
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"text": "a", "label": "spam"}\n')
    for opt in (["--model", "x"], ["--base-url", "http://127.0.0.1:9/v1"]):
        r = runner.invoke(app, ["eval", "--data", str(ok), "--json", *opt])
        assert r.exit_code == 2 and "apply to the icl backend" in _json(r)["error"], opt
