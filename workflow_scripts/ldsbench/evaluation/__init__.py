"""Evaluating scores: the Linear Datamodeling Score and its ceiling, the
cross-fitted comparison with paired differences, tuning, and the effects of
retraining without the top influences."""
