"""Forwards written as Hugging Face writes them stay on the fx rungs (issue 14): a `**kwargs`
forward, a cache object in the output, position ids made for real beside meta values and
checked by value. Each went to torch.export before, several times slower."""
from __future__ import annotations

import torch
from torch import nn

import archlint


class KVCache:
    """A cache that is not a pytree node: fx cannot record it as an output."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []


class Rotary(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, x):
        # Made for real on the device the proxy reports, then checked by value, as
        # transformers' masking code does with position ids.
        positions = torch.arange(x.shape[1], device=x.device)
        if not (positions[:1] == 0).all():
            raise ValueError("packed sequences")
        freqs = positions[:, None].float() * self.inv_freq.to(x.device)[None, :]
        return torch.cat([freqs.cos(), freqs.sin()], dim=-1)


class TinyDecoder(nn.Module):
    def __init__(self, vocab: int = 100, width: int = 32, use_cache: bool = True):
        super().__init__()
        self.use_cache = use_cache
        self.embed = nn.Embedding(vocab, width)
        self.rotary = Rotary(width)
        self.proj = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, input_ids, attention_mask=None, use_cache=None, **kwargs):
        use_cache = self.use_cache if use_cache is None else use_cache
        h = self.embed(input_ids)
        if h.shape[-1] != self.proj.in_features:
            raise ValueError("width")
        h = self.proj(h + self.rotary(h))
        logits = self.head(torch.relu(h))
        if not use_cache:
            return {"logits": logits}
        cache = KVCache()
        cache.keys.append(h)
        return {"logits": logits, "past_key_values": cache}


IDS = torch.zeros(1, 12, dtype=torch.long)


def test_a_kwargs_forward_with_shape_checks_is_traced_by_fx_not_export():
    model = TinyDecoder()
    report = archlint.lint(model, IDS)
    assert report.tracer == "torch.fx (meta)", report.notes
    assert not report.parts
    assert report.summary["params"] == sum(p.numel() for p in model.parameters())
    assert report.coverage["params"] == 1.0


def test_a_cache_object_in_a_kwargs_forward_output_is_read_as_its_tensors():
    report = archlint.lint(TinyDecoder(), IDS)
    assert any("torch.fx does not take KVCache as an output" in n for n in report.notes), report.notes
    without = archlint.lint(TinyDecoder(use_cache=False), IDS)
    assert without.tracer == "torch.fx (meta)"
    assert report.summary == without.summary


def test_the_positional_root_is_gone_from_the_class_after_the_trace():
    model = TinyDecoder()
    archlint.lint(model, IDS)
    assert not any(name.startswith("_archlint") for name in vars(TinyDecoder))
    assert "forward" not in vars(model)  # the output unpacking was patched on the instance only
    out = model(IDS)  # and the model still runs as the user wrote it
    assert isinstance(out["past_key_values"], KVCache)


def test_plain_forwards_keep_their_own_signature():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x, scale: float = 1.0):
            return self.conv(x) * scale

    report = archlint.lint(Net(), torch.randn(1, 3, 16, 16))
    assert report.tracer == "torch.fx"
    assert report.graph.inputs[0].name == "x"  # not the positional root's input_0


def test_meta_values_are_computed_without_recording_nodes():
    """Computing a proxy's meta value reads the layer's weights and runs it: none of that may
    land in the graph, which is then the plain fx graph of the same forward."""
    from archlint.trace import meta_copy
    from archlint.trace.fx import trace_fx
    from archlint.trace.meta_fx import trace_meta_fx

    model = meta_copy(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                                    nn.Linear(8 * 14 * 14, 4)))
    x = torch.empty(1, 3, 16, 16, device="meta")
    plain = [(op.name, op.kind, op.target) for op in trace_fx(model, [x]).ops]
    meta = [(op.name, op.kind, op.target) for op in trace_meta_fx(model, [x]).ops]
    assert meta == plain


def test_tensors_made_for_real_while_traced_stay_small():
    """Position ids made on the device the proxies report keep their values, for the checks
    forward makes on them; anything large (a one-hot of them, a huge mask) is made on meta."""
    from archlint.trace.meta_fx import MAX_REAL_ELEMENTS, _MetaMeetsCpu

    with _MetaMeetsCpu():
        positions = torch.arange(16, device="cpu")
        assert not positions.is_meta and bool((positions[:1] == 0).all())
        assert not torch.nn.functional.one_hot(positions, 1024).is_meta
        assert torch.zeros(MAX_REAL_ELEMENTS + 1, device="cpu").is_meta
        ids = torch.arange(4096, device="cpu")
        assert torch.nn.functional.one_hot(ids, 4097).is_meta  # 16.8M values: 134 MB if real
