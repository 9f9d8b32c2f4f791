"""The registry of attribution method types (torch-free); their code is one
module per type in ``ldsbench.methods``.

Each method type is declared here once, as data (``MethodType``): the module
and function that score it, its hyperparameter, the inputs its scoring job
needs, whether it can rank training examples for the removal branch, its
config check and its authors' recipe. The rules, scripts, config validation
and the plan ask the registry; nothing else tests a type's name. Adding a
method is its module, an entry in ``METHOD_TYPES``, its schema block, its
section in docs/methods.md, a method of the type in the tiny benchmark (the
contract test runs every registered type) and its tests.

A scoring job (``score_method.py``) is one method, for every measurement.
It builds a ``ScoringJob`` and calls the type's scorer, a function
``scorer(job) -> (values, scores)``:

- ``values``: the hyperparameter values scored (damping or lambda), the
  method's default first; ``[nan]`` for a method without one;
- ``scores``: ``{measurement name: [L, Q, N] float32}``, L = len(values), in
  the package's orientation (``attribution.scoring``: tau(q, i) predicts
  m(with i) - m(without i)). Training-side work is shared by all measurements.

The workflow hashes the scorer's module and every package module it imports
(``scorer_modules``) into that type's scoring jobs, so editing one method's
code rescores that method only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ldsbench.runtime.code_versions import module_closure
from ldsbench.spec.feature_keys import feature_key, projected_feature_sets
from ldsbench.spec.measurement_types import NOT_A_QUALITY_MEASURE, orientation_of
from ldsbench.spec.training_runs import ALL_DATA, RANDOM_CONTROL

#: The row of the retraining ceiling beside the methods (``evaluation.comparison``).
CEILING = "retraining_ceiling"
#: Row names of the benchmark's own, which no configured method may take.
RESERVED_NAMES = (CEILING, RANDOM_CONTROL, ALL_DATA)

# Inputs a scoring job can be given (``MethodType.needs``).
INPUTS = {
    "curvature": "the K-FAC/EK-FAC fit of its curvature settings (fit_curvature)",
    "trajectory": "the full model's replayed training with raw checkpoints (trace_full_training)",
    "training": "the full model's training settings",
    "ensemble": "full-data models of other training seeds (its `models` - 1)",
    "feature_model": "a local feature-encoder file (its `model_path`)",
    "query_sampling": "how the generated queries were sampled (the `queries` section)",
}
#: What an external method may declare in its ``needs`` (``type: external``).
DECLARABLE_INPUTS = ("curvature", "trajectory", "training", "ensemble")
#: The values a built-in type's scoring job sweeps and cross-fitting tunes.
HYPERPARAMETERS = ("damping", "lambda", "timestep")
# Memory models of the plan (``plan``): how a scoring job's peak is estimated.
ESTIMATES = ("influence", "projection", "tracin", "images", "nda", "unlearning", "iterative_influence")


@dataclass(frozen=True)
class Recipe:
    """How a method's authors run it, as their code does, with the file each
    choice comes from (docs/methods.md). Where the benchmark's default
    still differs, ``differences`` says how and why; the benchmark's own
    improvements are named options, never the default.

    ``gradient_draws`` is the authors' (t, eps) layout of per-example
    gradients (``noise.GradientDraws``): the schema default of the type's
    ``gradient_draws`` is filled from it (``config.load_schema``).
    """

    source: str  # the authors' code: repository and file
    choices: tuple[str, ...]  # each choice that decides scores, with its file
    gradient_draws: dict | None = None
    differences: tuple[str, ...] = ()


#: Named layouts of gradient draws (a config's ``gradient_draws`` block,
#: ``noise.GradientDraws``): the authors' of each method type and this
#: benchmark's variance-reduced ones (docs/methods.md, "Gradient draws").
GRADIENT_LAYOUTS = {
    "uniform": {"timesteps": "uniform", "antithetic": False, "common": False},
    "fixed_common": {"timesteps": "evenly_spaced", "antithetic": False, "common": True},
    "fixed": {"timesteps": "evenly_spaced", "antithetic": False, "common": False},
    "stratified_antithetic": {"timesteps": "stratified", "antithetic": True, "common": False},
    "stratified_antithetic_common": {"timesteps": "stratified", "antithetic": True, "common": True},
}

_RECIPES = {
    "influence": Recipe(
        source="BrunoKM/diffusion-influence (Mlodozeniec et al. 2025)",
        choices=(
            "per-example gradients: i.i.d. t ~ U{0..T-1} and eps per draw, different for every example and query "
            "(diffusion/train_util.py ddpm_sample_inputs_and_targets; diffusion_influence/influence.py compute_train_loss)",
            "250 draws per example and per query (scripts/configs/compute_influence_ekfac_cifar2.yaml: 125 x 2 aggregations)",
            "output functions: the training loss (MSE, mean over pixels) for training examples, the measurement for queries",
            "curvature: EK-FAC of the GGN with Monte Carlo targets (mc_samples 1), expand, 125 draws per example per pass "
            "(scripts/compute_influence.py, diffusion_influence/constructors.py)",
            "damping 1e-8, swept 1e-11 .. 1e-2 in their ablations (scripts/plots/configs/damping_ablation_cifar2_*.yaml)",
        ),
        gradient_draws=GRADIENT_LAYOUTS["uniform"],
        differences=(
            "parameters: Linear and Conv2d weights here; their code also includes those modules' biases (scripts/compute_influence.py)",
            "training gradients: in eval mode without flips here; theirs in train mode with random flips per draw (dropout and flips are off in the default)",
        ),
    ),
    "trak": Recipe(
        source="sail-sg/D-TRAK (Zheng et al. 2024), CIFAR2/grad_unconditional.py and the CIFAR2/methods notebooks",
        choices=(
            "per-example gradients at K fixed timesteps range(0, T, T // K) with the noise re-seeded per timestep, "
            "so every training example and query sees the same (t, eps) (grad_unconditional.py)",
            "K = 10 or 100 timesteps (100 reported best)",
            "output function on both sides: the loss for TRAK, the mean over pixels of eps_theta^2 for D-TRAK (compute_f)",
            "TRAK's projector, k = 4096 .. 32768 (32768 reported); kernel Phi^T Phi + lambda I, no feature normalisation",
            "lambda swept over 27 values 1e-2 .. 5e6 and the best kept (CIFAR2/methods/04_if notebooks)",
        ),
        gradient_draws=GRADIENT_LAYOUTS["fixed_common"],
        differences=(
            "parameters: Linear and Conv2d weights here; theirs every parameter (an independent cross-check moved LDS by at most 0.02)",
            "their noise also depends on an example's position in a batch of 52 (one tensor per timestep, re-seeded per batch); "
            "here one noise per timestep for every example and query, which is what that layout amounts to without the batching",
            "lambda: in units of the kernel's mean eigenvalue, 1e-3 .. 1e4 (from the interpolating end to past the largest eigenvalue), "
            "chosen by cross-fitting instead of on the reported queries",
        ),
    ),
    "journey_trak": Recipe(
        source="MadryLab/journey-TRAK (Georgiev et al. 2023), examples/featurize_cifar10.py and trak's gradient computers",
        choices=(
            "training features: per example, timesteps drawn i.i.d. uniform with replacement and fresh noise per draw (featurize_cifar10.py)",
            "5 timesteps per example (20 in their parallel and MS-COCO scripts); output: the loss (MSE, mean over pixels)",
            "query side: at sampling step t, x0_hat_t re-noised to t with fresh noise, the loss of that, summed over 20 resamplings",
            "Rademacher projection, k = 2048; the plain inverse of Phi^T Phi (no ridge)",
        ),
        gradient_draws=GRADIENT_LAYOUTS["uniform"],
        differences=(
            "one score per (query, example): the mean over sampler steps; theirs a separate score matrix per step",
            "parameters: Linear and Conv2d weights here; theirs every parameter",
            "a ridge lambda, tuned by cross-fitting; the untuned default 1e-8 mean eigenvalues is close to their no-ridge inverse",
        ),
    ),
    "das": Recipe(
        source="Jinxu-Lin/DAS (Lin et al. 2025), CIFAR2/03_grad.py and CIFAR2/07_score.py (formerly 07_scpre.py)",
        choices=(
            "per-example gradients at fixed timesteps range(0, T, T // K) with noise re-seeded per timestep, as D-TRAK (03_grad.py)",
            "output function: the mean over pixels of eps_theta on both sides (loss_function_type=mean in their README's run of 03_grad.py)",
            "lambda over D-TRAK's 27 values 1e-2 .. 5e6 (07_score.py)",
            "residual: per-example errors at all T timesteps with fixed noise, the error vector normalised (04_eval.py, 07_score.py load_error)",
        ),
        gradient_draws=GRADIENT_LAYOUTS["fixed_common"],
        differences=(
            "their repository at its latest commit does not run as published (functions called without arguments they need, "
            "paths that do not match between scripts); this benchmark follows the paper's derivation, with the scalar output "
            "variants of their scripts and the RMS residual over the gradient draws",
            "their per-timestep gradients are unit-normalised before averaging (03_grad.py); not here",
            "parameters: Linear and Conv2d weights here; theirs every parameter",
        ),
    ),
    "tracin": Recipe(
        source="txie1/diffusion-ReTrac (Xie et al. 2024), diffusion_tracin.py",
        choices=(
            "training side: each example at the timestep it was trained at, at every saved checkpoint, weighted by the learning rate",
            "query side: evenly spaced timesteps linspace(1, 999, 100), 16 fresh noises each, averaged",
            "ReTrac: per-timestep query gradients and training gradients scaled to unit norm",
        ),
        gradient_draws=GRADIENT_LAYOUTS["fixed"],
        differences=(
            "training side: the very (t, eps) draws training used, over every step between checkpoints (TracInCP's sum); "
            "theirs the checkpoint's epoch timestep with fresh noise, one draw per checkpoint",
            "the training loss is this benchmark's (MSE); theirs L1, the loss their models were trained with",
            "query side: 64 evenly spaced timesteps with one noise each (the draw budget); theirs 100 x 16",
        ),
    ),
    "pixel_similarity": Recipe(
        source="sail-sg/D-TRAK, CIFAR2/methods/-1_raw/RAW_N5000_val.ipynb",
        choices=("cosine similarity of the flattened images in [-1, 1] (the dot product as a variant)",),
    ),
    "feature_similarity": Recipe(
        source="the CLIP-similarity baselines of D-TRAK (CIFAR2/methods) and Mlodozeniec et al.",
        choices=("cosine similarity of an image encoder's features (CLIP's image tower)",),
    ),
    "nda": Recipe(
        source="sail-sg/NDA (Zhao et al. 2025), CIFAR2/nda_single_scale.py and CIFAR2/nda_twoscale.py",
        choices=(
            "the query noised to one fixed timestep, t = 100 (README, scripts/run_score_orig.sh: t_fixed 100; 100 .. 500 explored)",
            "one noise draw per timestep shared by every query, re-seeded e_seed * 1000 + t per query (nda_single_scale.py set_seeds)",
            "7 x 7 patches on 32 x 32 images, softmax over training images and positions, the top 100 positions per image summed, "
            "mask value 10 on padded entries (README's run_score_orig.sh 0 5000-0.5 0 1000 100 7 100 gen 10 64)",
            "two scales: alpha 0.5 of the 14 x 14 patch weights and 0.5 of 10 x 10 patches pooled in 2 x 2 blocks (run_score_twoscale.sh)",
            "the weights used as scores (larger: more influential)",
        ),
        differences=(
            "the weights are a similarity, signed per measurement as pixel similarity (negated for a lower-is-better measurement)",
            "the timestep: tuned over a grid by cross-fitting; theirs fixed per run",
        ),
    ),
    "unlearning": Recipe(
        source="PeterWang512/AttributeByUnlearning (Wang et al. 2024), mscoco/compute_influence.py",
        choices=(
            "diagonal Fisher: squared single-draw gradients of the training loss (MSE, mean over pixels), t ~ U{0..T-1} and eps "
            "i.i.d., averaged over the training set and 5 passes over it, in float64, undamped "
            "(mscoco/compute_fisher.py: noise line 23, timesteps lines 44-46, squares lines 85 and 97, num_epochs=5 line 135, eval mode line 124)",
            "unlearning: 1 step (--unlearn_steps, compute_influence.py line 52) of gradient ascent on the query's training loss, "
            "p += unlearn_lr grad / (F N) with unlearn_lr 0.01 and N the number of training images (lines 51, 77, 109)",
            "the query gradient: 625 accumulated batches of 80 draws (lines 53-54), timesteps distinct within a batch (randperm, "
            "line 99), fresh noise per draw (line 95)",
            "weights unlearned: the key and value projections of the cross-attention layers (--weight_selection cross-attn-kv, lines 16-21, 49)",
            "training losses before and after at 20 evenly spaced timesteps (0, 50, .., 950) with one fixed noise each, the same "
            "in both evaluations (mscoco/compute_training_loss.py collect_loss lines 31-35, 45-55)",
            "influence: loss after minus loss before, the larger the more influential (compute_influence.py lines 133, 141)",
        ),
        gradient_draws=GRADIENT_LAYOUTS["uniform"],
        differences=(
            "weights: the attributed Linear and Conv2d weights (or those of `modules`): an unconditional UNet has no cross-attention",
            "the query side: the measurement's per-draw output function, ascended (descended for a higher-is-better measurement), "
            "over 64 uniform draws by default (theirs: the training loss over 50,000 draws)",
            "score: SCORE_SIGN s Delta_i / (steps lr), the loss increase in the package's orientation, scaled to match influence with "
            "the Fisher as curvature; theirs Delta_i itself, maximised over a flipped copy (no flips here)",
            "the damping of F: default 1e-8 (theirs 0: the report's damping axis is logarithmic), tuned over damping_grid by cross-fitting",
            "float64 weights and passes throughout (dtype), so that a step of lr / N survives rounding; theirs a float32 model with "
            "the Fisher and the update in float64",
            "the fixed draws of the training losses are keyed by the image's content (theirs by its batch's position); several "
            "steps reuse the query's draws (theirs draw afresh; one step by default)",
        ),
    ),
    "iterative_influence": Recipe(
        source="ASTRA (arXiv 2507.14740): influence with inverse-Hessian-vector products solved iteratively, preconditioned by EK-FAC",
        choices=(
            "inverse-curvature-vector products by an iterative solver (a Neumann series) preconditioned by EK-FAC, the curvature applied by products only",
            "the influence formula and its parts otherwise as EK-FAC influence: gradients, draws, EK-FAC fit, damping",
        ),
        gradient_draws=GRADIENT_LAYOUTS["uniform"],
        differences=(
            "solver: preconditioned conjugate gradients started at EK-FAC's solution, all of a chunk's right-hand sides sharing "
            "each pass over the GGN data; the paper's Neumann-series variant is not implemented",
            "curvature: the exact GGN of the mean-MSE training loss on the EK-FAC fit's own draws (ggn_examples of them), "
            "not the Hessian; parameters: Linear and Conv2d weights",
        ),
    ),
    "random": Recipe(source="none: a control", choices=("independent standard normal scores",)),
    "external": Recipe(source="the user's own file (its `path`)", choices=("whatever its scorer computes, in the benchmark's orientation",)),
    "scores_file": Recipe(
        source="a score file computed elsewhere (its `path`), e.g. by kronfluence, dattri or traker",
        choices=("the file's scores as given, turned into the benchmark's orientation by its declared `layout` and `sign`",),
    ),
}


def _always(method: dict) -> bool:
    return True


def _never(method: dict) -> bool:
    return False


@dataclass(frozen=True)
class MethodType:
    """What the workflow needs to know of a method type, without importing it."""

    module: str  # under ldsbench.methods
    scorer: str  # its function scorer(job) -> (values, scores)
    hyperparameter: str | None = None  # one of HYPERPARAMETERS (its grid: f"{name}_grid"); None: none
    needs: frozenset[str] = frozenset()  # keys of INPUTS
    ranks_for_removal: bool = True  # a ranking of training examples worth retraining without
    # Whether an example's score follows the example when the training set is
    # reordered (false only where scores do not depend on the images).
    follows_examples: bool = True
    estimate: str = "images"  # one of ESTIMATES
    # Whether its query side follows the measurement: then its scoring job
    # holds one query set per distinct query gradient (``measurement_types``).
    query_follows_measurement: Callable[[dict], bool] = _never
    # Query-side draws per query, for the plan's passes.
    query_draws: Callable[[dict], int] = field(default=lambda method: method.get("query_draws", 0))
    passes_per_draw: int = 1  # backward passes per gradient draw (DAS: Jacobian rows and the loss)
    largest_batch: int | None = None  # examples per gradient block at most (None: the plan's default)
    # Config check beyond the schema: (name, entry, validated config) -> errors.
    check: Callable[[str, dict, dict], list[str]] | None = None
    # The projected training feature sets its scoring job reads, one per
    # model it scores with (``projected_feature_sets``): computed once by
    # ``project_training_features`` and shared by every method that asks
    # for the same set (``feature_keys``). None: it computes its own training side.
    training_features: Callable[[dict], list[dict]] | None = None
    # Its authors' recipe (``Recipe``): the defaults that decide scores.
    recipe: Recipe | None = None
    # Whether a method of the type declares its inputs itself (its config
    # entry's ``needs``, a subset of ``DECLARABLE_INPUTS``) on top of ``needs``.
    declares_needs: bool = False
    # Whether its scorer, not the registry, decides the values it scores
    # (an external method returns its own grid); else ``scored_values``.
    values_from_scorer: bool = False
    # Files outside the package whose content decides its scores
    # (``method_code_files``): (method entry) -> paths.
    code_files: Callable[[dict], list[str]] | None = None
    # Files its scoring job reads besides the model and data (an input of the
    # job, so replacing one rescores): (method entry, measurement names) -> paths.
    input_files: Callable[[dict, list[str]], list[str]] | None = None

    def __post_init__(self):
        unknown = set(self.needs) - set(INPUTS)
        if unknown or self.estimate not in ESTIMATES or self.hyperparameter not in (None, *HYPERPARAMETERS):
            raise ValueError(f"method type {self.module}.{self.scorer}: unknown needs {sorted(unknown)}, estimate {self.estimate!r} or hyperparameter")


def _journey_check(name: str, method: dict, config: dict) -> list[str]:
    sampling_steps = config["queries"]["sampling_steps"]
    if method["steps"] > sampling_steps:
        return [f"methods.{name}.steps: {method['steps']} exceeds the query sampler's queries.sampling_steps {sampling_steps}"]
    return []


def _similarity_check(name: str, method: dict, config: dict) -> list[str]:
    """A feature model file that exists (nothing is downloaded), and a sign
    wherever the orientation gives none."""
    errors = []
    if "model_path" in method:
        from ldsbench.spec.feature_models import FeatureModelError, check_feature_model_path

        try:
            check_feature_model_path(method["model_path"])
        except FeatureModelError as error:
            errors.append(f"methods.{name}.model_path: {error}")
    if method["sign"] is None:
        for measurement, entry in config["measurements"].items():
            if orientation_of(entry) == NOT_A_QUALITY_MEASURE:
                errors.append(
                    f"methods.{name}.sign: required, since measurements.{measurement} is not a quality measure "
                    "(+1: similar training images raise it, -1: they lower it)"
                )
    return errors


def _nda_check(name: str, method: dict, config: dict) -> list[str]:
    """Timesteps the scheduler has, and a sign wherever the orientation gives none."""
    steps = config["model"]["scheduler"]["num_train_timesteps"]
    errors = [
        f"methods.{name}.{key}: timestep {t} is not below model.scheduler.num_train_timesteps {steps}"
        for key, values in (("timestep", [method["timestep"]]), ("timestep_grid", method["timestep_grid"]))
        for t in values
        if t >= steps
    ]
    return errors + _similarity_check(name, method, config)


def _external_check(name: str, method: dict, config: dict) -> list[str]:
    """The user's file exists and defines its scorer; what it declares is complete."""
    from ldsbench.spec.external_files import external_method_errors

    errors = [f"methods.{name}.{error}" for error in external_method_errors(method)]
    if "ensemble" in method["needs"] and method["models"] < 2:
        errors.append(f"methods.{name}.models: {method['models']}; declaring needs: [ensemble] takes models >= 2 (the full model and models - 1 others)")
    return errors


def _scores_file_check(name: str, method: dict, config: dict) -> list[str]:
    """A readable score file of a known format for every measurement."""
    from ldsbench.spec.external_files import score_file_errors

    n_queries = config["queries"]["generated"] + config["queries"]["heldout"]
    errors = score_file_errors(method, list(config["measurements"]), n_queries, config["dataset"].get("n_train"))
    return [f"methods.{name}.{error}" for error in errors]


def _score_file_paths(method: dict, measurements: list[str]) -> list[str]:
    from ldsbench.spec.external_files import score_file_paths

    return sorted(set(score_file_paths(method, measurements).values()))


def _external_code_files(method: dict) -> list[str]:
    from ldsbench.runtime.code_versions import local_import_closure

    return [str(path) for path in local_import_closure(method["path"])]


METHOD_TYPES: dict[str, MethodType] = {
    "influence": MethodType(
        "influence",
        "score_influence",
        "damping",
        frozenset({"curvature"}),
        estimate="influence",
        query_follows_measurement=_always,
        recipe=_RECIPES["influence"],
    ),
    "trak": MethodType(
        "trak",
        "score_trak",
        "lambda",
        frozenset({"ensemble"}),
        estimate="projection",
        query_follows_measurement=lambda method: method["output_fn"] == "loss",
        training_features=lambda method: projected_feature_sets(method, method["output_fn"], method.get("models", 1)),
        recipe=_RECIPES["trak"],
    ),
    "journey_trak": MethodType(
        "journey",
        "score_journey_trak",
        "lambda",
        frozenset({"query_sampling"}),
        estimate="projection",
        query_draws=lambda method: method["steps"] * method["draws_per_step"],
        check=_journey_check,
        # The training side is TRAK's: the projected loss gradients.
        training_features=lambda method: projected_feature_sets(method, "loss"),
        recipe=_RECIPES["journey_trak"],
    ),
    "das": MethodType(
        "das",
        "score_das",
        "lambda",
        estimate="projection",
        passes_per_draw=2,
        largest_batch=64,
        query_follows_measurement=lambda method: method["form"] == "signed" and method["output"] == "jacobian",
        recipe=_RECIPES["das"],
    ),
    "iterative_influence": MethodType(
        "iterative_influence",
        "score_iterative_influence",
        "damping",
        frozenset({"curvature"}),
        estimate="iterative_influence",
        query_follows_measurement=_always,
        recipe=_RECIPES["iterative_influence"],
    ),
    "tracin": MethodType(
        "tracin",
        "score_tracin",
        None,
        frozenset({"trajectory", "training"}),
        estimate="tracin",
        query_follows_measurement=_always,
        recipe=_RECIPES["tracin"],
    ),
    "pixel_similarity": MethodType("similarity", "score_pixel_similarity", check=_similarity_check, recipe=_RECIPES["pixel_similarity"]),
    "feature_similarity": MethodType(
        "similarity", "score_feature_similarity", needs=frozenset({"feature_model"}), check=_similarity_check, recipe=_RECIPES["feature_similarity"]
    ),
    "nda": MethodType("nda", "score_nda", "timestep", estimate="nda", check=_nda_check, recipe=_RECIPES["nda"]),
    "unlearning": MethodType(
        "unlearning",
        "score_unlearning",
        "damping",
        estimate="unlearning",
        query_follows_measurement=_always,
        recipe=_RECIPES["unlearning"],
    ),
    "random": MethodType("random_baseline", "score_random", ranks_for_removal=False, follows_examples=False, recipe=_RECIPES["random"]),
    # A method from the user's own file (docs/external-methods.md).
    "external": MethodType(
        "external",
        "score_external",
        check=_external_check,
        recipe=_RECIPES["external"],
        declares_needs=True,
        values_from_scorer=True,
        code_files=_external_code_files,
    ),
    # Scores computed elsewhere, read from a file (docs/external-methods.md).
    "scores_file": MethodType(
        "scores_file",
        "score_scores_file",
        follows_examples=False,
        check=_scores_file_check,
        recipe=_RECIPES["scores_file"],
        input_files=_score_file_paths,
    ),
}


@dataclass
class ScoringJob:
    """The inputs of one scoring job, as its scorer sees them."""

    unet: object  # diffusers UNet2DModel, the full model (EMA weights)
    scheduler: object  # its DDPMScheduler
    train: object  # torch.Tensor [N, C, H, W], the full model's training set
    queries: object  # torch.Tensor [Q, C, H, W]
    method: dict  # the method's validated config entry
    measurements: dict  # {name: gradient settings (type, timestep, levels)}, every measurement scored
    inputs: dict = field(default_factory=dict)  # input paths: queries, curvature, trajectory, ensemble, training_features
    training: dict | None = None  # the full model's training settings (TracIn)
    device: object = None
    # Memory the job may use on its device (None: no limit) and the setting
    # that sets it, named in the error when a method cannot fit.
    budget_bytes: int | None = None
    budget_setting: str = "runtime.memory_gb"
    draws_per_pass: int = 64  # draws per backward pass of a per-example gradient
    model_manifest: dict | None = None  # the full model's manifest.json (provenance, weight checksums)
    name: str = ""  # the method's name in the config (for messages)
    # The benchmark the job scores (``runtime.fingerprints.benchmark_fingerprint``).
    benchmark: str | None = None


def method_type(name: str) -> MethodType:
    """The registry entry of type ``name``."""
    if name not in METHOD_TYPES:
        raise ValueError(f"unknown method type {name!r}; known: {', '.join(METHOD_TYPES)}")
    return METHOD_TYPES[name]


def needs(method: dict, name: str) -> bool:
    """Whether the scoring job of config entry ``method`` takes input ``name``
    (a key of INPUTS): the type's ``needs``, and for a type whose methods
    declare their own, the entry's ``needs``."""
    if name not in INPUTS:
        raise ValueError(f"unknown scoring input {name!r}; known: {', '.join(INPUTS)}")
    entry = method_type(method["type"])
    return name in entry.needs or (entry.declares_needs and name in method.get("needs", ()))


def hyperparameter_name(method: dict) -> str | None:
    """The name of the value a method's sweep varies (damping, lambda, or an
    external method's own ``hyperparameter``, "value" if it names none); None
    for a type without one."""
    entry = method_type(method["type"])
    return (method.get("hyperparameter") or "value") if entry.values_from_scorer else entry.hyperparameter


def method_code_files(method: dict) -> list[str]:
    """Files outside the package whose content decides the method's scores
    (an external method's file and the modules of its folder it imports)."""
    declared = method_type(method["type"]).code_files
    return [] if declared is None else declared(method)


def method_input_files(method: dict, measurements: list[str]) -> list[str]:
    """Files the method's scoring job reads besides the benchmark's (a score file)."""
    declared = method_type(method["type"]).input_files
    return [] if declared is None else declared(method, measurements)


def training_feature_sets(method: dict) -> list[dict]:
    """The projected training feature sets (``feature_keys``) the scoring
    job of config entry ``method`` reads, one per model; [] for none."""
    declared = method_type(method["type"]).training_features
    return [] if declared is None else declared(method)


def feature_sets(methods: dict) -> dict[str, dict]:
    """{file key: settings} of every projected feature set the configured methods read."""
    return {feature_key(s): s for method in methods.values() for s in training_feature_sets(method)}


def default_value(method: dict) -> float | None:
    """The method's untuned hyperparameter value (None without one)."""
    key = method_type(method["type"]).hyperparameter
    return None if key is None else method[key]


def scored_values(method: dict) -> list[float]:
    """The default value and its grid, without repeats, in that order (an
    external method's scorer returns its own: ``MethodType.values_from_scorer``)."""
    if method_type(method["type"]).values_from_scorer:
        raise ValueError(f"a method of type {method['type']} returns its own values")
    key = method_type(method["type"]).hyperparameter
    return [float("nan")] if key is None else list(dict.fromkeys([method[key], *method[f"{key}_grid"]]))


def query_follows_measurement(method: dict) -> bool:
    """Whether ``method``'s query side depends on the measurement (then its
    scoring job computes one query side per measurement group)."""
    return method_type(method["type"]).query_follows_measurement(method)


def scorer(name: str):
    """The scoring function of type ``name`` (imports its module)."""
    entry = method_type(name)
    return getattr(importlib.import_module(f"ldsbench.methods.{entry.module}"), entry.scorer)


def scorer_module(name: str) -> str:
    """The package module (dotted, under ``ldsbench``) of type ``name``'s scorer."""
    return f"methods.{method_type(name).module}"


def scorer_modules(name: str) -> list[str]:
    """The package files whose content decides type ``name``'s scores: the
    scorer's module and every package module it imports, transitively."""
    return module_closure(scorer_module(name))
