"""Drop-ins that let DeerFlow (1.x, 2.0 and the smart-deer-flow fork) run its work on a
deerflow-parallel cluster with no DeerFlow code changed beyond an import and a setting.

Install with the ``deerflow`` extra (``pip install 'deerflow-parallel[deerflow]'``); it needs
``langchain-core`` and nothing else of DeerFlow's. See docs/DEERFLOW.md.
"""
