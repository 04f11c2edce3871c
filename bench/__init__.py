"""lambdad's performance benchmark: every figure beside a baseline measured in the same run.

Run it with `python bench/run.py [--quick] [--json PATH]`; see bench/README.md.
"""
