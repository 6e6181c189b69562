"""Batch slicing on the CPU backend: the same outputs as one pass, and a lower peak memory."""

import mlx.core as mx
import numpy as np
from conftest import tiny_config

from mlx_albert import AlbertModel


def test_sliced_forward_equals_one_pass_and_uses_less_memory():
    mx.random.seed(0)
    model = AlbertModel(tiny_config(hidden_size=64, intermediate_size=256, max_positions=64, num_blocks=3))
    model.eval()
    ids = mx.random.randint(5, 50, (12, 64))
    mask = mx.array((np.arange(64) < np.array([[64], [40]] * 6)).astype(np.int32))
    model.encoder.activation_budget = 1 << 40  # one pass
    assert model.encoder.slice_size(12, 64, 4) == 12
    mx.eval(model(ids, attention_mask=mask).last_hidden_state)
    mx.reset_peak_memory()
    whole = model(ids, attention_mask=mask)
    mx.eval(whole.last_hidden_state, whole.pooler_output)
    peak_whole = mx.get_peak_memory()
    model.encoder.activation_budget = 1  # one sequence at a time
    assert model.encoder.slice_size(12, 64, 4) == 1
    mx.reset_peak_memory()
    sliced = model(ids, attention_mask=mask)
    mx.eval(sliced.last_hidden_state, sliced.pooler_output)
    assert mx.get_peak_memory() < peak_whole
    assert mx.abs(sliced.last_hidden_state - whole.last_hidden_state).max().item() < 1e-5
    assert mx.abs(sliced.pooler_output - whole.pooler_output).max().item() < 1e-5
    # hidden states / attentions and training keep one pass (they need every layer of every row)
    out = model(ids, attention_mask=mask, output_hidden_states=True)
    assert len(out.hidden_states) == 4 and out.hidden_states[-1].shape == (12, 64, 64)
    model.train()
    assert model.encoder.slice_size(12, 64, 4) == 1  # the size rule itself is mode-free
    loss = lambda m: (m(ids, attention_mask=mask).last_hidden_state ** 2).mean()  # noqa: E731
    import mlx.nn as nn

    value, grads = nn.value_and_grad(model, loss)(model)
    assert np.isfinite(value.item())


def test_gpu_default_is_one_pass():
    model = AlbertModel(tiny_config())
    if mx.default_device() == mx.cpu:
        assert model.encoder.slice_size(10_000, 16, 4) < 10_000  # big batches are sliced on the CPU
    else:
        assert model.encoder.slice_size(10_000, 16, 4) == 10_000
