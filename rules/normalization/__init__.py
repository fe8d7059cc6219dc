"""N: normalization: BatchNorm batch sizes, biases a norm cancels, shared norms, dropout before BatchNorm."""
