"""S: feature-map sizes: windows that miss pixels, padding that shrinks maps, inputs that do not divide."""
