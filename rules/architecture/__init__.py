"""A: architecture: nonlinearities, what the model returns, depth without skips."""
