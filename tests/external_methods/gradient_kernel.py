"""An external method for the tests, loaded from this file by the workflow
(``type: external``): the loss-gradient kernel of the full model,

    tau(q, i) = -phi_q^T (Phi^T Phi + lambda I)^-1 phi_i,

with randomly projected gradients averaged over independent (t, eps) draws,
scored over a grid of lambdas that the benchmark tunes. It imports a module
of its own folder (``projected``), whose content is part of its code version."""

from projected import projected_gradients


def score(inputs):
    params = inputs.params
    projector = inputs.projector(params["dim"], seed=params["seed"])
    train = projected_gradients(inputs.training_gradients(params["draws"], seed=params["seed"]), projector)
    lambdas = [params["lambda"], *params["lambda_grid"]]
    scores = {}
    for measurement in inputs.measurements:
        query = projected_gradients(inputs.query_gradients(measurement, params["draws"], seed=params["seed"]), projector)
        scores[measurement] = inputs.SCORE_SIGN * inputs.ridge_scores(query, train, lambdas, lambda_scale="mean_eigenvalue")
    return lambdas, scores
