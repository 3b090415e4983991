"""doit entry point: every recipe in recipes/ becomes tasks (see src/modelmake/build/graph.py)."""
from modelmake.build.graph import dodo_namespace

globals().update(dodo_namespace(__file__))
