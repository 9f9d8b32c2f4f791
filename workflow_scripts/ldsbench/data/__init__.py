"""Images the benchmark trains on and is queried with: the built-in and local
image sets, latents of a local VAE, and the random training subsets."""
