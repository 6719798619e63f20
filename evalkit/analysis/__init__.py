"""The analysis layer: the study's spec and one module per workbook section.

:mod:`~evalkit.analysis.spec` resolves the params into the analysis spec (what each
outcome, covariate and arm is); :mod:`~evalkit.analysis.study` opens a prepared run for
the workbooks; ``outcomes``, ``design``, ``valuation``, ``comparisons``, ``readmission``,
``time_series``, ``planning`` and ``summary`` do each section's work, and ``show`` and
``plots`` turn its results into tables and figures for readers. Params are read here
(and by the runner, :mod:`evalkit.prepare` and the brief), never below: the statistics
(:mod:`evalkit.models`, :mod:`evalkit.causal`, :mod:`evalkit.survival`,
:mod:`evalkit.synthesis`, :mod:`evalkit.econ`) take frames, formulas and numbers.
"""
