"""Outputs torch.export refuses (a key/value cache object, an unregistered dataclass) are read
as the tensors they hold, so the model is traced whole instead of part by part (issue 11).

The models here are our own, written the way Hugging Face's decoders return their cache
(`use_cache=True`): no library is needed. tests/test_transformers_models.py runs the real ones.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import torch
from torch import nn

import archlint
from archlint.trace.outputs import exportable, tensors_in

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class KVLayer:
    """One layer's keys and values, as transformers' DynamicLayer: a plain object, no pytree."""

    def __init__(self):
        self.keys = self.values = None
        self.device = None  # a non-tensor attribute the walk must pass over

    def update(self, keys, values):
        self.device = keys.device
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = torch.cat([self.keys, keys], dim=-2)
            self.values = torch.cat([self.values, values], dim=-2)
        return self.keys, self.values


class KVCache:
    def __init__(self, n_layers: int):
        self.layers = [KVLayer() for _ in range(n_layers)]


class Attention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, cache_layer):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if cache_layer is not None:
            k, v = cache_layer.update(k, v)
        weights = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
        return self.proj(weights @ v)


class Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        # Two Linears with nothing between them: A001 fires here, with the cache and without.
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim))

    def forward(self, x, cache_layer):
        x = x + self.attn(self.norm(x), cache_layer)
        return x + self.mlp(x)


@dataclasses.dataclass
class DecoderOutput:  # not registered with pytree: export refuses it as an output
    logits: torch.Tensor
    cache: KVCache | None = None


class TinyDecoder(nn.Module):
    def __init__(self, use_cache: bool = True, as_dataclass: bool = False):
        super().__init__()
        self.use_cache, self.as_dataclass = use_cache, as_dataclass
        self.embed = nn.Embedding(100, 32)
        self.blocks = nn.ModuleList(Block(32) for _ in range(2))
        self.head = nn.Linear(32, 100)

    def forward(self, ids):
        cache = KVCache(len(self.blocks)) if self.use_cache else None
        x = self.embed(ids)
        for i, block in enumerate(self.blocks):
            x = block(x, cache.layers[i] if cache is not None else None)
        logits = self.head(x)
        if self.as_dataclass:
            return DecoderOutput(logits, cache)
        return {"logits": logits, "cache": cache} if cache is not None else {"logits": logits}


IDS = torch.zeros(1, 8, dtype=torch.long)


def findings_of(report):
    return sorted((f.code, f.module, f.severity.name, f.message) for f in report.findings)


def test_a_cache_object_in_the_output_is_traced_whole_with_its_tensors():
    model = TinyDecoder()
    report = archlint.lint(model, IDS)
    assert report.tracer == "torch.export"
    assert not report.parts
    assert not any("could not be traced" in n for n in report.notes)
    assert any("torch.export does not take KVCache as an output" in n and "5 tensors" in n
               for n in report.notes), report.notes  # the logits, two keys, two values
    assert report.summary["params"] == sum(p.numel() for p in model.parameters())
    assert report.coverage["params"] == 1.0 and not report.coverage["unreached"]
    # The keys and values are outputs of the graph: the layers that made them are live.
    assert "P004" not in {f.code for f in report.findings}


def test_with_the_cache_the_numbers_and_findings_are_those_without_it():
    cached, plain = archlint.lint(TinyDecoder(), IDS), archlint.lint(TinyDecoder(use_cache=False), IDS)
    assert plain.tracer != "parts"
    assert cached.summary == plain.summary
    assert findings_of(cached) == findings_of(plain)
    assert {f.code for f in cached.findings} >= {"A001"}  # the comparison compares something


def test_an_unregistered_dataclass_output_is_read_by_its_fields():
    model = TinyDecoder(as_dataclass=True)
    report = archlint.lint(model, IDS)
    assert report.tracer == "torch.export" and not report.parts
    assert any("DecoderOutput" in n for n in report.notes)
    assert report.coverage["params"] == 1.0
    assert findings_of(report) == findings_of(archlint.lint(TinyDecoder(use_cache=False), IDS))


def test_outputs_export_takes_are_left_as_they_are():
    t = torch.zeros(2)
    assert exportable(t) and exportable((t, {"a": [t, None, 3, "x"]}))
    assert not exportable({"cache": KVCache(1)})


def test_the_walk_reads_each_tensor_once_and_survives_cycles():
    a, b = torch.zeros(1), torch.ones(1)
    cache = KVCache(2)
    cache.layers[0].update(a, b)
    cache.layers[1].update(a, b)  # the same tensors again
    cache.self_ref = cache
    cache.owner = nn.Linear(2, 2)  # a module's weights are not the output's data
    found, opened = tensors_in({"logits": b, "cache": cache})
    assert [id(t) for t in found] == [id(b), id(a)]
    assert opened == ["KVCache"]


def test_without_transformers_installed_or_imported_the_cache_model_lints():
    """archlint never imports transformers for this: the walk is generic."""
    child = r"""
import json, sys, torch, archlint
sys.path.insert(0, "tests")
from test_trace_outputs import IDS, TinyDecoder
report = archlint.lint(TinyDecoder(), IDS)
print(json.dumps({"tracer": report.tracer, "coverage": report.coverage["params"],
                  "transformers": "transformers" in sys.modules}))
"""
    out = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"tracer": "torch.export", "coverage": 1.0, "transformers": False}
