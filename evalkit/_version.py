"""The installed evalkit's version (the ``version`` in pyproject.toml)."""
__version__ = "0.1.0"
