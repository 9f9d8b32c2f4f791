"""What the attribution methods share: the scoring base and sign convention,
per-example gradients, random projection, projected training features,
K-FAC/EK-FAC curvature and reduced-precision row storage."""
