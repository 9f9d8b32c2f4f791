# Figures beyond the LDS summary: the query and its most positive and most
# negative training examples under each method.


rule plot_attribution_grid:
    input:
        # Images, also in latent mode (common.smk, PIXELS and QUERY_IMAGES).
        train=f"{PIXELS}/train.npz",
        queries=QUERY_IMAGES,
        scores=[f"{R}/scores/{method}/{GRID_MEASUREMENT}.npy" for method in METHODS],
    output:
        report(f"{R}/attribution_grid.png", caption="../report/attribution_grid.rst", category="Attributions"),
    log:
        f"{R}/logs/plot_attribution_grid.log",
    benchmark:
        f"{R}/benchmarks/plot_attribution_grid.tsv"
    conda:
        CONDA_ENV
    params:
        methods=METHODS,
        measurement=GRID_MEASUREMENT,
        queries=config["report"]["grid_queries"],
        examples=config["report"]["grid_examples"],
        code=code_version("plot_attribution_grid.py", "report.image_grid"),
    script:
        f"{STEPS}/plot_attribution_grid.py"
