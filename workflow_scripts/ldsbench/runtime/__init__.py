"""What every stage needs to run: atomic files, provenance and checksums,
seeds, job set-up (logs, devices, models on disk), GPU slots and code versions."""
