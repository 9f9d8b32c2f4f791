"""The named per-draw output functions (torch-free): one scalar per draw
(x0, eps, t) whose gradient is a method's feature (TRAK's and D-TRAK's
``output_fn``). Their implementations are ``diffusion.outputs.NAMED_OUTPUTS``
under the same names; the config schema's ``output_fn`` enum is generated
from this table (``spec.config.load_schema``). eps_theta is the model's noise
prediction at x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.
"""

OUTPUT_FUNCTIONS = {
    "loss": "mean over pixels of (eps - eps_theta(x_t, t))^2, the simplified diffusion loss (TRAK)",
    "squared_norm": "mean over pixels of eps_theta(x_t, t)^2 (D-TRAK)",
    "mean": "mean over pixels of eps_theta(x_t, t) (D-TRAK's ablation)",
    "l1_norm": "mean over pixels of |eps_theta(x_t, t)| (D-TRAK's ablation)",
    "l2_norm": "Euclidean norm of eps_theta(x_t, t) over pixels (D-TRAK's ablation)",
    "linf_norm": "largest |eps_theta(x_t, t)| over pixels (D-TRAK's ablation)",
    "elbo_weighted": "the simplified loss summed over pixels, weighted by the ELBO's w_t, with t drawn from w_t (SimplifiedElbo)",
}
