"""Errors raised by slimgraph: each names what is wrong and where (file, node, pass, option)."""


class SlimgraphError(Exception):
    """Base of every error slimgraph reports to a user as one line."""


class ModelImportError(SlimgraphError):
    """A model could not be imported (bad file, unsupported op, failing factory)."""


class VerifyError(SlimgraphError):
    """The verifier found a broken graph; the message names the node."""


class ParseError(SlimgraphError):
    """IR text could not be parsed; the message names the file and line."""
