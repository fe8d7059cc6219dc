"""archlint's built-in rules: one module per rule, in one package per family of advice.

    kernels        K: kernel sizes and shapes
    normalization  N: BatchNorm, GroupNorm, biases before norms
    inplace        I: in-place operations that destroy tensors still needed
    downsampling   D: pooling, strides, widening
    shape          S: output sizes, padding, pixels never read
    receptive      R: receptive field
    params         P: parameter counts and hardware efficiency
    architecture   A: nonlinearity, outputs, depth without skips
    upsampling     U: transposed convs and resizing
    batch          B: samples of a batch mixed where they should stay apart

A rule's module is named after its slug (`kernels/large_kernel.py` holds K001 large-kernel) and
carries the class with its docs, options, examples and `check`, and the helpers only it uses;
`helpers.py` holds what several rules share. Modules are discovered, not listed: a new rule is
a new module in a family package.
"""
