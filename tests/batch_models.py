"""Small models for B001 (tests/test_rules_batch.py): ones that mix the samples of a batch, ones
that keep them apart (some of them merging the batch with heads or windows and splitting it
back), ones that mix on purpose, and the measurement that says which is which on real tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# --- the measurement -------------------------------------------------------------------------

def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _outputs(o)]
    return [out] if isinstance(out, torch.Tensor) else []


def _rows(y: torch.Tensor, batch_dim: int) -> torch.Tensor:
    return y.movedim(batch_dim, 0) if y.dim() > batch_dim else y


def mixes(model: nn.Module, shapes, batch: int, batch_dim: int = 0, train: bool = False,
          seed: int = 0, out_dim: int | None = None) -> bool:
    """Whether output row i changes when only input row j != i changes, on real CPU tensors:
    the model's inputs (one shape per input, its batch dim sized `batch`) filled with random
    values, each sample j perturbed in turn, every other row i of every output (its batch dim
    `out_dim`, by default the inputs') compared."""
    model.train(train)
    gen = torch.Generator().manual_seed(seed)
    xs = []
    for shape in shapes:
        shape = list(shape)
        shape[batch_dim] = batch
        xs.append(torch.randn(shape, generator=gen))

    def run(inputs):
        torch.manual_seed(seed)  # the same dropout masks, permutations, noise on every call
        with torch.no_grad():
            return [_rows(y, batch_dim if out_dim is None else out_dim) for y in _outputs(model(*inputs))]

    ys = run(xs)
    for j in range(batch):
        moved = [x.clone() for x in xs]
        for x in moved:
            x.select(batch_dim, j).add_(torch.randn(x.select(batch_dim, j).shape, generator=gen))
        for y, y2 in zip(ys, run(moved)):
            for i in range(y.shape[0]):
                if i != j and not torch.allclose(y[i], y2[i], atol=1e-6, rtol=1e-5):
                    return True
    return False


def runs_at(model: nn.Module, shapes, batch: int) -> bool:
    model.eval()
    try:
        with torch.no_grad():
            model(*[torch.randn(batch, *s[1:]) for s in shapes])
    except RuntimeError:
        return False
    return True


# --- models that mix the samples of a batch ----------------------------------------------------

class SoftmaxOverBatch(nn.Module):
    def __init__(self, dim: int = 0):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 5)
        self.softmax = nn.Softmax(dim=dim)

    def forward(self, x):
        return self.softmax(self.fc(self.features(x)))


class ImplicitSoftmax(nn.Module):
    """F.softmax without dim on (B, N, C) tokens: PyTorch takes dim 0."""

    def __init__(self, dim: int | None = None):
        super().__init__()
        self.dim = dim
        self.embed = nn.Conv2d(3, 16, 4, stride=4)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        return F.softmax(self.head(tokens), dim=self.dim)


class BatchCentering(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = x - x.mean(0, keepdim=True)
        return self.b(x)


class FlattenWholeBatch(nn.Module):
    """`x.view(-1)` where `x.view(x.size(0), -1)` was meant: runs with a batch of one only."""

    def __init__(self, fixed: bool = False):
        super().__init__()
        self.fixed = fixed
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = x.flatten(1) if self.fixed else x.view(-1)
        return self.fc(x)


class OneRowOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.features(x)).view(1, -1)


class HalfBatchOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        y = self.fc(self.features(x))
        return y.reshape(max(1, y.size(0) // 2), -1)


class SeqFirstAttentionFedBatchFirst(nn.Module):
    def __init__(self, batch_first: bool = False):
        super().__init__()
        self.embed = nn.Conv1d(4, 32, 3, padding=1)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=batch_first)

    def forward(self, x):
        tokens = self.embed(x).transpose(1, 2)
        out, _ = self.attn(tokens, tokens, tokens)
        return out


class SeqFirstLSTMFedBatchFirst(nn.Module):
    def __init__(self, batch_first: bool = False):
        super().__init__()
        self.embed = nn.Conv1d(4, 16, 3, padding=1)
        self.rnn = nn.LSTM(16, 8, batch_first=batch_first)

    def forward(self, x):
        out, (h, c) = self.rnn(self.embed(x).transpose(1, 2))
        return out


class GramAcrossBatch(nn.Module):
    """A transpose that puts the batch into the dim a matrix product sums over."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3, padding=1)

    def forward(self, x):
        f = self.conv(x).mean(2)
        gram = f.t() @ f
        return f @ gram


class TransposeIntoChannels(nn.Module):
    """`x.transpose(0, 1)` puts the batch where the next conv reads its channels: a conv built
    for the traced batch of one, which fails at two."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(4, 8, 3, padding=1)
        self.b = nn.Conv1d(1, 2, 3, padding=1)

    def forward(self, x):
        return self.b(self.a(x).transpose(0, 1))


class ViewForTranspose(nn.Module):
    """`x.reshape(N, B, D)` where `x.transpose(0, 1)` was meant, before a sequence-first attention."""

    def __init__(self, fixed: bool = False):
        super().__init__()
        self.fixed = fixed
        self.embed = nn.Conv1d(4, 16, 1)
        self.attn = nn.MultiheadAttention(16, 2)

    def forward(self, x):
        x = self.embed(x).transpose(1, 2)  # (B, N, D)
        B, N, D = x.shape
        t = x.permute(1, 0, 2) if self.fixed else x.reshape(N, B, D)
        out, _ = self.attn(t, t, t)
        return out.permute(1, 0, 2) if self.fixed else out.reshape(B, N, D)


class LayerNormOverEverything(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, stride=4)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = F.layer_norm(x, x.shape)  # meant x.shape[-1:]
        return self.head(x)


class SortedOverBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return torch.sort(self.conv(x), dim=0).values


class RowsAcrossSamples(nn.Module):
    """`view(3, -1)` with a hard-coded 3: at a batch of 2 each row holds parts of two samples."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.features(x).view(3, -1)


class MetaRungSoftmax(nn.Module):
    """A shape check in forward: traced by the fx rung with meta values, so B001 traces again."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        if x.shape[-1] % 8:
            raise ValueError("width must be a multiple of 8")
        b = x.shape[0]
        return self.conv(x).view(b, -1).softmax(dim=0)


class ExportRungSoftmax(nn.Module):
    """No fx rung follows an isinstance check on the input: torch.export traces it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError("expected a tensor")
        return torch.log_softmax(self.fc(self.conv(x).mean((2, 3))), dim=0)


class SeqFirstMixtureHead(nn.Module):
    """World Models' MDRNN before its fix: inputs (seq, batch, features), a sequence-first LSTM,
    and the mixture weights' log-softmax over dim -2, the batch, for dim -1."""

    def __init__(self, dim: int = -2):
        super().__init__()
        self.dim = dim
        self.rnn = nn.LSTM(7, 16)
        self.head = nn.Linear(16, 5 * 4 + 5)

    def forward(self, actions, latents):
        seq_len, bs = actions.size(0), actions.size(1)
        out = self.head(self.rnn(torch.cat([actions, latents], dim=-1))[0])
        mus = out[:, :, :20].view(seq_len, bs, 5, 4)
        logpi = F.log_softmax(out[:, :, 20:].view(seq_len, bs, 5), dim=self.dim)
        return mus, logpi


class CellMixtureHead(nn.Module):
    """World Models' MDRNNCell before its fix: one LSTMCell step, the mixture weights viewed as
    (-1, gaussians) and log-softmaxed over dim -2, the batch."""

    def __init__(self, dim: int = -2):
        super().__init__()
        self.dim = dim
        self.cell = nn.LSTMCell(7, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, action, latent):
        h, c = self.cell(torch.cat([action, latent], dim=1))
        return F.log_softmax(self.head(h).view(-1, 5), dim=self.dim)


class SoftMoEDispatch(nn.Module):
    """Soft-MoE's dispatch weights before their fix: a softmax over dim 0 of (b, m, n, p), the
    batch, where the paper's dim 0 (tokens) is dim 1 once the batch is added."""

    def __init__(self, dim: int = 0):
        super().__init__()
        self.dim = dim
        self.phi = nn.Parameter(torch.randn(8, 2, 3) * 0.1)
        self.expert = nn.Linear(8, 8)

    def forward(self, x):
        logits = torch.einsum("bmd,dnp->bmnp", x, self.phi)
        dispatch = logits.softmax(dim=self.dim)
        slots = torch.einsum("bmd,bmnp->bnpd", x, dispatch)
        combine = logits.flatten(start_dim=2).softmax(dim=-1).view_as(logits)
        return torch.einsum("bnpd,bmnp->bmd", self.expert(slots), combine)


# --- models that keep the samples apart ----------------------------------------------------

class HeadsMergedIntoBatch(nn.Module):
    """Multi-head attention with the heads merged into the batch, (B*H, N, D), split back after."""

    def __init__(self, dim: int = 16, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = (t.reshape(B * self.heads, N, -1) for t in (q, k, v))
        attn = torch.bmm(q, k.transpose(1, 2)).softmax(dim=-1)
        out = torch.bmm(attn, v).reshape(B, self.heads, N, -1).transpose(1, 2).reshape(B, N, C)
        return self.proj(out)


class WindowAttention(nn.Module):
    """Swin's window partition: (B, H, W, C) to (B * windows, ws*ws, C), a cyclic shift over the
    spatial dims, attention in each window, and the windows put back."""

    def __init__(self, dim: int = 8, window: int = 4):
        super().__init__()
        self.window = window
        self.embed = nn.Conv2d(3, dim, 2, stride=2)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x):
        x = self.embed(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        B, H, W, C = x.shape
        ws = self.window
        x = torch.roll(self.norm(x), shifts=(-1, -1), dims=(1, 2))
        w = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)
        q, k, v = self.qkv(w).chunk(3, dim=-1)
        w = F.scaled_dot_product_attention(q, k, v)
        x = w.view(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
        return torch.roll(x, shifts=(1, 1), dims=(1, 2)).permute(0, 3, 1, 2)


class ClassTokenViT(nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 17, dim))
        self.block = nn.TransformerEncoderLayer(dim, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.block(x)[:, 0])


class SeqFirstTransformer(nn.Module):
    """Inputs (L, B, E): the example input (L, 1, E) says the batch is dim 1."""

    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.encoder(x))


class ModulatedConv(nn.Module):
    """StyleGAN2's modulated conv: one kernel per sample, the batch folded into the channels
    and a grouped conv with groups=B."""

    def __init__(self, c: int = 4, o: int = 6, latent: int = 8):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, o, c, 3, 3))
        self.style = nn.Linear(latent, c)
        self.o, self.c = o, c

    def forward(self, x, w):
        B, C, H, W = x.shape
        style = self.style(w).view(B, 1, C, 1, 1)
        weight = self.weight * style
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(B, self.o, 1, 1, 1)
        weight = weight.view(B * self.o, C, 3, 3)
        out = F.conv2d(x.reshape(1, B * C, H, W), weight, padding=1, groups=B)
        return out.view(B, self.o, H, W)


class StyleList(nn.Module):
    """StyleGAN2's generator takes a list of style batches: its (1, 1, E) example is one style
    (dim 0, iterated) for a batch of one (dim 1)."""

    def __init__(self):
        super().__init__()
        self.mapping = nn.Linear(8, 8)
        self.mean = torch.zeros(1, 8)  # a plain tensor attribute, made the input's type

    def forward(self, styles):
        styles = [self.mapping(s) for s in styles]
        return styles[0] - self.mean.type_as(styles[0])


class RecurrentBothWays(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Conv1d(4, 8, 3, padding=1)
        self.gru = nn.GRU(8, 8, batch_first=True)
        self.lstm = nn.LSTM(8, 8)  # sequence-first, fed (L, B, H)

    def forward(self, x):
        x, _ = self.gru(self.embed(x).transpose(1, 2))
        y, (h, c) = self.lstm(x.transpose(0, 1))
        return y.transpose(0, 1) + h[-1].unsqueeze(1)


class PerSampleFlattens(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)
        self.flat = nn.Flatten()

    def forward(self, x):
        x = torch.relu(self.conv(x))
        a = self.fc(x.view(x.size(0), -1))
        b = self.fc(x.reshape(x.shape[0], -1))
        c = self.fc(torch.flatten(x, 1))
        d = self.fc(self.flat(x))
        return (a + b + c + d).view(-1, 3)


class RegressionHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 1)

    def forward(self, x):
        return self.fc(self.features(x)).view(-1)  # (B, 1) -> (B,)


class EinsumAttention(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.einsum("bhid,bhjd->bhij", q, k).softmax(dim=-1)
        out = torch.einsum("bhij,bhjd->bhid", attn, v)
        return out.transpose(1, 2).reshape(B, N, C).mean(dim=1)


class TwoViewsInOneBatch(nn.Module):
    """Test-time augmentation: the image and its flip laid end to end in one batch, split after."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                                 nn.Conv2d(8, 4, 3, padding=1), nn.InstanceNorm2d(4))

    def forward(self, x):
        both = self.net(torch.cat([x, x.flip(-1)], dim=0))
        a, b = both.chunk(2, dim=0)
        return a + b.flip(-1)


# --- models that mix the batch on purpose: B001 stays quiet ----------------------------------

class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4), nn.BatchNorm1d(4))

    def forward(self, x):
        return self.net(x)


class HandWrittenBatchNorm(nn.Module):
    """Batch statistics per channel, over the batch and the positions: BatchNorm by hand."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.conv(x)
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
        return self.head((x - mean) / torch.sqrt(var + 1e-5))


class MinibatchStdDev(nn.Module):
    """ProGAN/StyleGAN2's discriminator end: the batch's standard deviation as an extra channel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.final = nn.Conv2d(9, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 1)

    def forward(self, x):
        out = F.leaky_relu(self.conv(x), 0.2)
        batch, channel, height, width = out.shape
        group = min(batch, 4)
        stddev = out.view(group, -1, 1, channel, height, width)
        stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
        stddev = stddev.mean([2, 3, 4], keepdim=True).squeeze(2)
        stddev = stddev.repeat(group, 1, height, width)
        out = self.final(torch.cat([out, stddev], 1))
        return self.fc(out.view(batch, -1))


class ContrastiveLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(8, 8))

    def forward(self, x):
        z = F.normalize(self.encoder(x), dim=1)
        return z @ z.t() / 0.1  # every sample against every other: the logits of InfoNCE


class MixupInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, 3))

    def forward(self, x):
        perm = torch.randperm(x.shape[0])
        return self.net(0.7 * x + 0.3 * x[perm])


class LossInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, 3))

    def forward(self, x):
        return torch.logsumexp(self.net(x), dim=1).mean()


# --- models where intent is unclear: information ---------------------------------------------

class SetMLP(nn.Module):
    """Rows that may be nodes or instances: nothing reads dim 0 as a batch."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        return torch.softmax(self.b(torch.relu(self.a(x))), dim=0)


class Prototype(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.features(x).mean(0)  # one embedding for the whole set


class FlattenedTokenLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Conv1d(4, 8, 1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        logits = self.head(self.embed(x).transpose(1, 2))  # (B, L, 5)
        return logits.reshape(-1, 5)  # (B*L, 5), as cross_entropy wants
