"""P: parameters: where the weights sit, whether hardware uses them well, whether any are dead."""
