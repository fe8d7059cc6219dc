"""R: receptive field: what one position of a feature map can see of the input."""
