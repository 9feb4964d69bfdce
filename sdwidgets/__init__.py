"""sdwidgets: Stable Diffusion in Jupyter (placeholder, the core lands next)."""
__version__ = "0.1.0"
