"""Built-in nodes. Importing this package registers them.

- :mod:`zerohop.nodes.testing`: small deterministic nodes for tests, examples, soak
  and chaos runs (echo, text transforms, CPU burners, crash injection, fan-in/out).
"""

from . import testing

__all__ = ["testing"]
