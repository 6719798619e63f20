"""Engines other than the embedded DuckDB default that run the member x window aggregation.

The aggregation is defined once, as DuckDB SQL, in :mod:`evalkit.utilization`; an engine
here runs *that* definition, translated, never a second hand-written copy.

* :mod:`evalkit.engines.spark`: Apache Spark (local mode or a cluster), through SQLGlot.
"""
