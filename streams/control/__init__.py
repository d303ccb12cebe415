"""The control topic: how the registry reaches consumers on nodes without the driver's disk.

The driver's registry actor publishes every registry document (``documents``) whenever it changes
(``bridge``); each consumer that cannot read the repository follows the topic into a node-local
mirror, fetching model files as their manifests arrive (``mirror``). The registry's own code reads
the mirror as it reads the repository, so promotions, traffic policies and tags apply the same way.
"""
