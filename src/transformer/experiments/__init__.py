"""Experiments on runs: the ablation of classic mistakes, and plots.

    ablate.py          the mistakes trained next to the baseline, from one seed
    ablate_report.py   their table, for the terminal and as Markdown
    plots.py           learning curves and attention maps as PNG (matplotlib)
"""
