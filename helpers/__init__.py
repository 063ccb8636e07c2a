"""Reusable code for the book: data, models, training, plots and more.

Submodules are split by concept and imported on demand, for example
``from helpers import data, models, training``.
"""

__version__ = "0.1.0"
