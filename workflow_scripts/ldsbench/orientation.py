"""Orientations of measurements: which direction of a value is better.

One place for the three names (torch-free, so config validation can use
them). Orientation never changes a score or an LDS; it is stored next to
every value, picks which end of a ranking the removal branch takes, and
turns a similarity into a score (README, "Methods").
"""

LOWER_IS_BETTER = "lower_is_better"
HIGHER_IS_BETTER = "higher_is_better"
# The squared norm of the predicted noise says nothing about how good the
# model is on the query (a model can lower it by predicting less noise,
# right or wrong), so it gets neither quality orientation.
NOT_A_QUALITY_MEASURE = "not_a_quality_measure"


# Orientation of each measurement type (``measurement.MEASUREMENTS[type].
# orientation``; a test keeps the two equal). Config checks, the summary and
# the similarity baselines need it without importing torch.
MEASUREMENT_ORIENTATION = {
    "loss": LOWER_IS_BETTER,
    "loss_at_t": LOWER_IS_BETTER,
    "squared_norm": NOT_A_QUALITY_MEASURE,
    "simplified_elbo": LOWER_IS_BETTER,
    "elbo": HIGHER_IS_BETTER,
    "log_likelihood": HIGHER_IS_BETTER,
}
