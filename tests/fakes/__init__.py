"""Fakes of external services that speak the real wire protocols (``openai_server``, …).

Nothing is re-exported here: ``python -m tests.fakes.openai_server`` would otherwise find
the module already imported by this package and run a second copy of it.
"""
