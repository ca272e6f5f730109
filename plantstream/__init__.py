"""plantstream: streaming OEE, downtime, scrap and condition monitoring at the plant edge.

One import name for the whole distribution. Its subpackages, in the order imports may point
(each imports only those before it):

- :mod:`plantstream.schemas`: records, the plant config model, ClickHouse migrations;
- :mod:`plantstream.operators`: the domain logic (no I/O);
- :mod:`plantstream.connectors`: everything that touches another system;
- :mod:`plantstream.simulators`: the simulated plants of the demo and the tests (their own
  distribution, ``plantstream-simulators``; not in the production install);
- :mod:`plantstream.flows`: the Bytewax dataflows;
- :mod:`plantstream.cli`: the ``plantstream`` command line.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("plantstream")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"
