"""Networks: the network file, shared noise, the one ``simulate`` interface and its backends.

Light to import: the Lava and Brian2 backends load their simulators only when used.
"""
import neurons  # noqa: F401  (sets OMP_WAIT_POLICY before anything can load torch)
from networks.network import FORMAT_VERSION, IPVAENetwork, load_network, save_network
from networks.planted import planted_inputs, planted_network
from networks.simulate import available_backends, simulate
from networks.trace import Trace

__all__ = ["FORMAT_VERSION", "IPVAENetwork", "Trace", "available_backends", "load_network",
           "planted_inputs", "planted_network", "save_network", "simulate"]
