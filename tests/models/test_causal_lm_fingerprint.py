"""The causal LM's fingerprint binds a probe to one model's weights, every layer of them."""

from __future__ import annotations

import copy

import pytest
import torch

from guardrails.models import load_causal_lm

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def smol():
    return load_causal_lm("smollm2-135m-instruct")


def _with_model(lm, model):
    other = copy.copy(lm)
    other.model = model
    return other


def test_a_change_in_a_late_layer_changes_the_fingerprint_and_the_default_probe_refuses_it(smol):
    """A fine-tune of later layers only (here: layer 20's MLP down-projection scaled by 1 %) is another model: the
    previous definition sampled only the first four tensors and gave both the same fingerprint."""
    from probes import ProbeMismatchError, load_probe
    from probes.probe import model_fingerprints

    tuned = copy.deepcopy(smol.model)
    with torch.no_grad():
        tuned.model.layers[20].mlp.down_proj.weight.mul_(1.01)
    other = _with_model(smol, tuned)
    assert other.fingerprint() != smol.fingerprint()
    assert other.sample_fingerprint() == smol.sample_fingerprint()  # what the old definition could not tell apart
    bundle = load_probe("default")
    bundle.check_model(model_fingerprints(smol), smol.name)
    assert bundle.single.meta.model_fingerprint == smol.fingerprint()  # the shipped probe carries the current one
    with pytest.raises(ProbeMismatchError, match="retrain"):
        bundle.check_model(model_fingerprints(other), other.name)


def test_the_fingerprint_ignores_dtype_and_is_stable(smol):
    """The bf16 copy CUDA serves has the fp32 model's fingerprint; two calls agree; older definitions are accepted."""
    half = _with_model(smol, copy.deepcopy(smol.model).to(torch.bfloat16))
    assert half.fingerprint() == smol.fingerprint() == smol.fingerprint()
    fps = smol.fingerprints()
    assert fps[0] == smol.fingerprint() and len(set(fps)) == 3  # current, first-four-tensor sample, whole config


def test_a_model_with_offloaded_weights_is_a_typed_error(smol):
    """Weights on the meta device (accelerate offload) cannot be read: a ModelLoadError naming the model, not a raw
    NotImplementedError from the copy."""
    from guardrails.errors import ModelLoadError

    offloaded = copy.deepcopy(smol.model)
    offloaded.model.layers[29].to("meta")
    with pytest.raises(ModelLoadError, match="offloaded"):
        _with_model(smol, offloaded).fingerprint()
