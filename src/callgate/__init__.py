"""callgate: enterprise voice calling that IT can run, control and audit."""

__version__ = "0.1.0"
__all__ = ["__version__"]
