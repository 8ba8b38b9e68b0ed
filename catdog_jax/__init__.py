"""catdog-jax: the seed's cats-vs-dogs CNN in JAX/Flax, honestly evaluated."""
