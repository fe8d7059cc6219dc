"""I003 inplace-on-input: forward modifying its own input tensor in place."""
from __future__ import annotations

from archlint.findings import Fix, Severity
from archlint.rule import Rule

from ..helpers import Storage, in_place_writers, out_of_place, writer_text


class InplaceOnInput(Rule):
    code = "I003"
    name = "inplace-on-input"
    severity = Severity.ERROR
    summary = "forward modifies its own input tensor in place: the caller's batch changes."
    what = """
        Finds an in-place operation in forward that writes the model's input tensor or a view of
        it: `x /= 255`, `x.sub_(mean)`, a first layer built with `inplace=True`.
        """
    why = """
        The caller still holds the tensor it passed in. After forward it holds different
        numbers: a batch reused for a second model, logged, or fed again in the next epoch of a
        cached dataset is silently transformed twice. If the input requires grad (adversarial
        training, input attribution), autograd refuses the write outright: "a leaf Variable
        that requires grad is being used in an in-place operation".
        """
    how_to_fix = """
        Make the op out of place (`x = x / 255`), or copy once at the top of forward
        (`x = x.clone()`). The finding's fix is the rewritten line or constructor.
        """
    references = (
        "PyTorch docs, Autograd mechanics: In-place operations with autograd (https://pytorch.org/docs/stable/notes/autograd.html#in-place-operations-with-autograd)",
        "PyTorch docs, Autograd mechanics: In-place correctness checks (https://pytorch.org/docs/stable/notes/autograd.html#in-place-correctness-checks)",
    )
    bad = (
        """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 16, 3, padding=1)

            def forward(self, x):
                x /= 255  # changes the caller's tensor
                return self.conv(x)


        model = Net()
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 16, 3, padding=1)
                self.act = nn.ReLU(inplace=True)  # writes the conv output, not the input

            def forward(self, x):
                x = x / 255
                return self.act(self.conv(x))


        model = Net()
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        storage = Storage.of(graph)
        inputs = {l.name: l for l in graph.inputs}
        for writer in in_place_writers(graph):
            hit = next((storage.root.get(w, w) for w in writer.writes if storage.root.get(w, w) in inputs), None)
            if hit is None:
                continue
            source = inputs[hit]
            yield self.finding(
                writer,
                f"{writer_text(writer)} modifies the model's input {source.name} "
                f"({'x'.join(map(str, source.out_shape or ()))}) in place: the caller's tensor "
                f"changes under it",
                evidence={"writer": writer.name, "input": source.name,
                          "input_shape": list(source.out_shape or ())},
                fix=Fix("make the op out of place, or copy the input first with x = x.clone()",
                        out_of_place(writer) or f"{source.name} = {source.name}.clone()  # first line of forward"),
                prefer="call",
            )
