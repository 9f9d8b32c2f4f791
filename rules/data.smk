rule prepare_data:
    output:
        train=f"{R}/data/train.npz",
        heldout=f"{R}/data/heldout.npz",
    log:
        f"{R}/logs/prepare_data.log",
    benchmark:
        f"{R}/benchmarks/prepare_data.tsv"
    conda:
        CONDA_ENV
    params:
        dataset=config["dataset"],
    script:
        f"{STEPS}/prepare_data.py"


rule sample_subsets:
    input:
        train=f"{R}/data/train.npz",
    output:
        f"{R}/subsets.parquet",
    log:
        f"{R}/logs/sample_subsets.log",
    benchmark:
        f"{R}/benchmarks/sample_subsets.tsv"
    conda:
        CONDA_ENV
    params:
        benchmark=config["benchmark"],
    script:
        f"{STEPS}/sample_subsets.py"
