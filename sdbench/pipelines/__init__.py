"""Building diffusers pipelines from a Case: build and cache, tokenizer, optimisation profiles, fp8, FLOP counting and capability rules."""
