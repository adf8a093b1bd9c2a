"""The report step: tables in, one self-contained HTML page (plus plots, tables, a summary and
metrics) out. ``cli.py`` and ``component.py`` call ``single.report.build_report`` (one run) or
``compare.report.build_compare_report`` (two runs); the sub-packages below them, by job: ``inputs``
(read and check), ``metrics`` (the numbers), ``page`` and ``assets`` (what a page is made of)."""
