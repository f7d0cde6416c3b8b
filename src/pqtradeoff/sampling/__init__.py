"""How the next token is chosen: adaptor specs and warpers, nucleus, the sampler's random streams."""
