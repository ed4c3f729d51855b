# api.md repeats the docstrings, whose examples already run as doctests.
collect_ignore = ["api.md", "gen_api.py"]
