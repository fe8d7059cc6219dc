"""K: kernel sizes and shapes."""
