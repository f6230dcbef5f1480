"""The serving peers of the bake-off (issue 27): Triton and KServe's ModelServer.

:mod:`hpcml.serve.peers.launch` builds each peer's own virtual environment on demand
(``ci/setup_peers``, cached in ``~/.cache/hpcml/peers``) and starts and stops a peer by pid;
``triton_server.py`` and ``kserve_server.py`` are the standalone scripts that run inside those
environments (hpcml is not installed there) and serve an exported ONNX file over v2 REST.
"""
