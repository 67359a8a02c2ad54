"""The multi-process harness of dkron-lab's own tests, which the package does not ship (its test
helpers for everyone are ``dkron_lab.testing``, a pytest plugin):

- ``processes``: ``Processes`` starts child processes and kills each by pid at the end; ``Child``
  reads one line by line and pauses, resumes or kills it.
- ``cluster``: ``Cluster``, whole clusters of ``dkron-lab agent`` processes on loopback.
- ``network``: ``TcpProxy`` and ``Network``, partitions through proxies in front of the nodes.
- ``netns``: ``NamespacedCluster``, partitions for real, each node in a network namespace.

Importable as ``tests.harness`` from the tests, the benchmarks and their child scripts: the
editable install puts the checkout on ``sys.path`` (``dev-mode-dirs`` in pyproject.toml).
"""

from tests.harness.cluster import Cluster, ClusterNode, new_cluster_key
from tests.harness.netns import NamespacedCluster, NamespacedNode, network_namespaces_unavailable
from tests.harness.network import Network, TcpProxy
from tests.harness.processes import Child, Processes

__all__ = [
    "Child",
    "Cluster",
    "ClusterNode",
    "NamespacedCluster",
    "NamespacedNode",
    "Network",
    "Processes",
    "TcpProxy",
    "network_namespaces_unavailable",
    "new_cluster_key",
]
