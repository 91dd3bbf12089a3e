"""The pipeline's steps as library functions with typed arguments: each recipe in recipes/ parses its
options with `trl.TrlParser` and calls one `run` (`stage1`, `stage2`, `stage3`, `explicit_cot`,
`build_sids`, `evaluate`, `merge_lora`, `recommend`, `prepare_data`); `main_job.run` chains Stages 1 to 3."""
