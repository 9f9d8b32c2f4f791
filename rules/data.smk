rule prepare_data:
    output:
        train=f"{R}/data/train.npz",
        heldout=f"{R}/data/heldout.npz",
    params:
        dataset=config["dataset"],
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/prepare_data.log",
    benchmark:
        f"{R}/benchmarks/prepare_data.tsv"
    script:
        f"{STEPS}/prepare_data.py"


rule sample_subsets:
    input:
        train=f"{R}/data/train.npz",
    output:
        f"{R}/subsets.parquet",
    params:
        benchmark=config["benchmark"],
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/sample_subsets.log",
    benchmark:
        f"{R}/benchmarks/sample_subsets.tsv"
    script:
        f"{STEPS}/sample_subsets.py"
