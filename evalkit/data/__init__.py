"""Reading a plan's data: the data contract, loading with checks and quarantine, the
person-level mode, OMOP and Synthea sources, and the synthetic plans."""
