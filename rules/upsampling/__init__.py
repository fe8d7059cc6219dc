"""U: upsampling layers."""
