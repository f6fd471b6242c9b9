"""mnist-classifier: handwritten digits, answered honestly.

    import mnist_classifier
    reader = mnist_classifier.load()          # the bundled, calibrated SimpleCNN (no training needed)
    answer = reader.predict("digit.png")
    print(answer.verdict, answer.digit, f"{answer.confidence:.1%}")
    # what cannot be read raises ImageError; a model that cannot be loaded, CheckpointError
    # (both UserError: one line saying what is wrong and what to do)

The command line (`mnist-classifier train|evaluate|predict|demo|serve|...`) is cli.py.
"""
from .answer import Answer
from .errors import CheckpointError, ImageError, UserError
from .reader import Reader, load

__all__ = ["Answer", "CheckpointError", "ImageError", "Reader", "UserError", "load"]
__version__ = "0.2.0"
