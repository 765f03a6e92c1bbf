"""Hardware: the Loihi path (design §2.4, docs/fixed-point.md).

- ``hardware.quantize``: a float network → integer weights, exponents, tables and bit
  widths in the formats of ``neurons.fixed``; the quantized network file;
- ``hardware.emulator``: ``simulate(..., backend="fixed")``, the reference's row loop with
  the integer kernels;
- ``hardware.lava_fixed``: ``simulate(..., backend="lava-fixed")``, Lava's fixed_pt models;
- ``hardware.resources``: the Loihi 2 resource report and the work per inference;
- ``hardware.targets``: deployment targets and the check for Intel's Loihi runtime.

Nothing here is imported by ``neurons`` (imports flow hardware → networks, neurons).
"""
