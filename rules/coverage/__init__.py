"""Rules about what archlint itself could see of the model."""
