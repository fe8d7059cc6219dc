"""Hugging Face models at their default config (`use_cache=True`) are traced whole: exact
parameters, full coverage, and the findings they get with the cache off (issues 11 and 14).

Tiny configs with random weights built on meta, so each model takes about a second. The 7B
Llama's memory and time are measured by bench/bench_memory.py, not here.
"""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import archlint
from archlint.cli import main

transformers = pytest.importorskip("transformers")

IDS = torch.zeros(1, 16, dtype=torch.long)


def gpt2(**config):
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, **config))


def llama(**config):
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=256, intermediate_size=512, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=1000, **config))


def bert(**config):
    return transformers.BertModel(transformers.BertConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128, **config))


def t5(**config):
    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        num_layers=2, num_decoder_layers=2, d_model=64, d_ff=128, num_heads=2, d_kv=32,
        vocab_size=500, **config))


# T5 takes the encoder's ids, their mask and the decoder's ids.
T5_INPUTS = (IDS, torch.ones(1, 16, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))


def linted(build, inputs=(IDS,), **config):
    with torch.device("meta"):  # as a user builds a large model
        model = build(**config)
    return model, archlint.lint(model, inputs)


def findings_of(report):
    return sorted((f.code, f.module, f.severity.name, f.message) for f in report.findings)


@pytest.mark.parametrize("build, inputs, cache", [
    (gpt2, (IDS,), "DynamicCache"),
    (llama, (IDS,), "DynamicCache"),
    (t5, T5_INPUTS, "EncoderDecoderCache"),
], ids=["gpt2", "llama", "t5"])
def test_a_decoder_with_its_cache_on_is_traced_whole_with_exact_numbers(build, inputs, cache):
    model, report = linted(build, inputs)
    # Off torch.export since issue 14: the **kwargs forward is traced through a positional
    # root, the shape checks on meta-backed proxies, and the cache unpacked as fx's output.
    assert report.tracer == "torch.fx (meta)"
    assert not report.parts and not any("could not be traced" in n for n in report.notes)
    assert any(f"does not take {cache}" in n for n in report.notes), report.notes
    assert report.summary["params"] == sum(p.numel() for p in model.parameters())
    cov = report.coverage
    assert cov["params"] == 1.0 and cov["modules_reached"] == cov["modules_total"]
    assert not cov["unreached"]
    _, without = linted(build, inputs, use_cache=False)
    assert report.summary == without.summary
    assert findings_of(report) == findings_of(without)


def test_bert_is_traced_whole_with_full_coverage():
    model, report = linted(bert)
    assert report.tracer == "torch.fx (meta)" and not report.parts
    assert report.summary["params"] == sum(p.numel() for p in model.parameters())
    assert report.coverage["params"] == 1.0 and not report.coverage["unreached"]


def test_a_file_building_llama_on_meta_lints_whole_through_the_cli(write_model):
    path = write_model('''
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=256,
                                                 intermediate_size=512, num_attention_heads=4,
                                                 num_key_value_heads=2, vocab_size=1000))
    ''')
    result = CliRunner().invoke(main, ["check", "--no-cache", "--format", "json",
                                       "--input-shape", "1,32:int64", str(path)])
    model = json.loads(result.output)["models"][0]
    assert "error" not in model, model
    assert model["tracer"] == "torch.fx (meta)"
    with torch.device("meta"):
        expected = sum(p.numel() for p in llama().parameters())
    assert model["summary"]["params"] == expected
    assert model["coverage"]["params"] == 1.0
    # Per token: q, k, v, o (k and v at 2 of 4 heads), gate, up, down in each of 2 layers,
    # and the head; attention's two products are 32 x 32 x 256 each, per layer.
    per_token = 2 * (256 * 256 * 2 + 256 * 128 * 2 + 3 * 256 * 512) + 256 * 1000
    assert model["summary"]["macs"] == 32 * per_token + 2 * 2 * 32 * 32 * 256
