"""A run: its settings, and the directory that holds it.

    settings.py            recipe < --set < flags, resume rules: one RunSettings, checked once
    recipes/*.toml         the shipped recipes (copy, multi30k, base, big, wmt14)
    rundir.py              the run directory: config.json, load_run for every command
    ablated_attention.py   the attention mistakes of `transformer ablate`, restored on load
"""
