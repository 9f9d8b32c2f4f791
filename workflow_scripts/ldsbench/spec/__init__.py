"""What a config means, torch-free: validation against the schema, the
registries of method, measurement and dataset types, file checks, the names
of cached files and the training runs. The workflow's rules import this
package (and ``planning``) while Snakemake parses them."""
