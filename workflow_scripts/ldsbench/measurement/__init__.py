"""Measurements m(q) of a trained model on each query: Monte Carlo
estimators of the loss and its relatives, the DDPM ELBO and the
probability-flow likelihood."""
