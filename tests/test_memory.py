"""Batch slicing on the CPU backend: the same outputs as one pass, and a lower peak memory."""

import mlx.core as mx
import numpy as np
from conftest import tiny_config
from tolerances import forward_tol

from mlx_albert import AlbertModel


def test_sliced_forward_equals_one_pass_and_uses_less_memory():
    mx.random.seed(0)
    model = AlbertModel(tiny_config(hidden_size=64, intermediate_size=256, max_positions=64, num_blocks=3))
    model.eval()
    ids = mx.random.randint(5, 50, (12, 64))
    mask = mx.array((np.arange(64) < np.array([[64], [40]] * 6)).astype(np.int32))
    one_pass = 1 << 40  # bytes: one pass
    assert model.encoder.slice_size(12, 64, 4, one_pass) == 12
    mx.eval(model(ids, attention_mask=mask, activation_budget=one_pass).last_hidden_state)
    mx.reset_peak_memory()
    whole = model(ids, attention_mask=mask, activation_budget=one_pass)
    mx.eval(whole.last_hidden_state, whole.pooler_output)
    peak_whole = mx.get_peak_memory()
    assert model.encoder.slice_size(12, 64, 4, 1) == 1  # one sequence at a time
    mx.reset_peak_memory()
    sliced = model(ids, attention_mask=mask, activation_budget=1)
    mx.eval(sliced.last_hidden_state, sliced.pooler_output)
    assert mx.get_peak_memory() < peak_whole
    # batches of another size: the same sums, blocked differently by the BLAS
    for field in ("last_hidden_state", "pooler_output"):
        ref = getattr(whole, field)
        tol = forward_tol(model.config, 64, scale=mx.abs(ref).max().item())
        assert mx.abs(getattr(sliced, field) - ref).max().item() <= tol, field
    # hidden states / attentions and training keep one pass (they need every layer of every row)
    out = model(ids, attention_mask=mask, output_hidden_states=True, activation_budget=1)
    assert len(out.hidden_states) == 4 and out.hidden_states[-1].shape == (12, 64, 64)
    model.train()
    assert model.encoder.slice_size(12, 64, 4, 1) == 1  # the size rule itself is mode-free
    loss = lambda m: (m(ids, attention_mask=mask, activation_budget=1).last_hidden_state ** 2).mean()  # noqa: E731
    import mlx.nn as nn

    value, grads = nn.value_and_grad(model, loss)(model)
    assert np.isfinite(value.item())


def test_default_budget_per_backend(monkeypatch):
    """CPU: 128 MB. GPU backends: a sixteenth of the device's memory, and the estimate per sequence
    scaled by the graph factor measured there; a device that reports no memory runs one pass."""
    import mlx_albert.memory as model_module

    encoder = AlbertModel(tiny_config(hidden_size=64, intermediate_size=256, max_positions=128)).encoder
    one_layer = 128 * (5 * encoder.num_heads * 128 + 10 * 256) * 2  # bytes per sequence, bfloat16
    monkeypatch.setattr(model_module, "on_gpu", lambda: False)
    assert model_module.default_budget() == 128 << 20
    assert encoder.slice_size(10_000, 128, 2) == (128 << 20) // one_layer
    monkeypatch.setattr(model_module, "on_gpu", lambda: True)

    def device_info(info: dict) -> None:
        monkeypatch.setattr(mx, "device_info", lambda: info)
        model_module._device_memory.cache_clear()  # the answer is cached per device

    device_info({"architecture": "sm_90", "total_memory": 80 << 30})
    assert model_module.default_budget() == 5 << 30
    per_sequence = one_layer * model_module.GPU_GRAPH_FACTOR
    assert encoder.slice_size(256, 128, 2) == 256  # fits: one pass fills the device
    assert encoder.slice_size(100_000, 128, 2) == (5 << 30) // per_sequence
    device_info({"memory_size": 16 << 30, "max_recommended_working_set_size": 10 << 30})
    assert model_module.default_budget() == (10 << 30) // 16  # Metal: the recommended working set
    device_info({"architecture": "unknown"})
    assert model_module.default_budget() is None and encoder.slice_size(100_000, 128, 2) == 100_000
    assert encoder.slice_size(100_000, 128, 2, 1) == 1  # an explicit budget wins everywhere
    model_module._device_memory.cache_clear()
