"""archlint's built-in rules, one module per family of design advice.

    kernels        K: kernel sizes and shapes
    normalization  N: BatchNorm, GroupNorm, biases before norms
    inplace        I: in-place operations that destroy tensors still needed
    downsampling   D: pooling, strides, widening
    shape          S: output sizes, padding, pixels never read
    receptive      R: receptive field
    params         P: parameter counts and hardware efficiency
    architecture   A: nonlinearity, outputs, depth without skips

Modules here are discovered, not listed: a new rule is a new class in one of them (or a new
module), with its docs and its bad/good examples.
"""
