"""I: in-place operations that destroy a tensor something else still needs."""
