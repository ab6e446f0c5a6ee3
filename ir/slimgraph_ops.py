"""slimgraph's own ops (`torch.ops.slimgraph.*`), registered with torch.library.

Each op has a real reference kernel and a fake (meta) kernel, so every graph runs in PyTorch
and exports again. The quantization and fusion issues add their ops here.
"""
import torch

LIBRARY = torch.library.Library("slimgraph", "FRAGMENT")
