"""D: downsampling: pooling, strides, and widening when the map shrinks."""
