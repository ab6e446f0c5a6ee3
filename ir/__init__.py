"""slimgraph's IR: one torch.fx graph in a canonical op set, its text form, verifier and statistics."""
from .builder import GraphBuilder
from .errors import ModelImportError, ParseError, SlimgraphError, VerifyError
from .graph import Graph, Provenance, provenance_of
from .frontend_torch import from_torch
from .parser import load, parse, save
from .text import print_graph

__all__ = ["Graph", "GraphBuilder", "Provenance", "provenance_of", "from_torch", "parse", "print_graph",
           "load", "save", "SlimgraphError", "ModelImportError", "ParseError", "VerifyError"]
