"""analysis: charts and an HTML report from one results folder, and comparisons between two.

Reads only what docs/results-format.md describes (never the servers or the load generator):
``results.py`` reads and validates, ``metrics.py`` and ``classic.py`` derive figures, ``verdicts.py`` words
them, ``charts.py`` draws, ``report.py`` assembles the page, ``output.py`` writes it atomically.
"""
