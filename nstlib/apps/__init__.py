"""Programs built on the library: the command line (`cli`), a fast feed-forward style network you train (`fast_style`),
and a comparison with a pretrained feed-forward network (`compare`, an optional extra)."""
