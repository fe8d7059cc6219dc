"""B: the samples of a batch, which a model should treat one by one."""
