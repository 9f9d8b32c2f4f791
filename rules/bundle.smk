# Benchmark bundles (docs/bundles.md): `snakemake bundle` packs what scoring
# reads of the trained and measured benchmark into {results}/bundle/;
# `snakemake rescore --config bundle=PATH` scores the configured methods
# against such a bundle, copying its files to their places under {results}
# so that every scoring rule runs unchanged.
import shlex

# The command that made a bundle, for its card: through the environment,
# which the jobs inherit, so that it is no param (a param would re-export the
# bundle whenever the command line changed).
if workflow.is_main_process:
    os.environ.setdefault("LDSBENCH_COMMAND", shlex.join(["snakemake", *sys.argv[1:]]))

if BUNDLE is None:
    BUNDLE_CONTENTS = bundle_contents(config)

    rule bundle:
        input:
            [f"{R}/{path}" for path in (*BUNDLE_CONTENTS.files, *BUNDLE_CONTENTS.models)],
        output:
            directory(f"{R}/bundle"),
        log:
            f"{R}/logs/bundle.log",
        benchmark:
            f"{R}/benchmarks/bundle.tsv"
        conda:
            CONDA_ENV
        params:
            # The results folder the bundle folder sits in.
            results=lambda w, output: os.path.dirname(output[0]),
            contents=asdict(BUNDLE_CONTENTS),
            # The plan's passes of the training and measuring rules: the card's cost.
            plan=[asdict(row) for row in ESTIMATES.values()],
            basedir=workflow.basedir,
        script:
            f"{STEPS}/write_bundle.py"

else:
    BUNDLE_UNITS = entries(BUNDLE_MANIFEST)
    BUNDLE_MODELS = [unit.removeprefix("models/") for unit in BUNDLE_UNITS if unit.startswith("models/")]
    BUNDLE_FILES = [unit for unit in BUNDLE_UNITS if not unit.startswith("models/")]

    # Each file of the bundle at its place under {results}; the job checks its
    # sha256 again (the bundle may have changed since the run was parsed).
    rule unpack_bundle_file:
        input:
            lambda w: f"{BUNDLE}/{w.bundle_file}",
        output:
            f"{R}/{{bundle_file}}",
        log:
            f"{R}/logs/bundle/{{bundle_file}}.log",
        benchmark:
            f"{R}/benchmarks/bundle/{{bundle_file}}.tsv"
        wildcard_constraints:
            bundle_file="|".join(re.escape(unit) for unit in BUNDLE_FILES),
        conda:
            CONDA_ENV
        params:
            bundle=BUNDLE,
            unit=lambda w: w.bundle_file,
        script:
            f"{STEPS}/unpack_bundle.py"

    use rule unpack_bundle_file as unpack_bundle_model with:
        input:
            lambda w: f"{BUNDLE}/models/{w.bundle_model}",
        output:
            directory(f"{R}/models/{{bundle_model}}"),
        log:
            f"{R}/logs/bundle/models/{{bundle_model}}.log",
        benchmark:
            f"{R}/benchmarks/bundle/models/{{bundle_model}}.tsv"
        wildcard_constraints:
            bundle_model="|".join(re.escape(name) for name in BUNDLE_MODELS),
        params:
            bundle=BUNDLE,
            unit=lambda w: f"models/{w.bundle_model}",

    if BUNDLE_MANIFEST["prepared"]:

        # A dataset the bundle may not carry (CIFAR): prepared from the
        # receiver's own copy (dataset.path) and checked against the
        # producer's training set, pixel for pixel.
        rule prepare_bundle_data:
            output:
                train=f"{R}/data/train.npz",
            log:
                f"{R}/logs/bundle/prepare_data.log",
            benchmark:
                f"{R}/benchmarks/bundle/prepare_data.tsv"
            conda:
                CONDA_ENV
            params:
                dataset=config["dataset"],
                images_sha256=BUNDLE_MANIFEST["prepared"]["data/train.npz"]["images_sha256"],
            script:
                f"{STEPS}/prepare_bundle_data.py"
