"""mnist-classifier: handwritten digits, answered honestly.

    import mnist_classifier
    reader = mnist_classifier.load()          # the bundled, calibrated SimpleCNN (no training needed)
    answer = reader.predict("digit.png")
    print(answer.verdict, answer.digit, f"{answer.confidence:.1%}")

The command line (`mnist-classifier train|evaluate|predict|demo|serve|...`) is cli.py.
"""
from .answer import Answer
from .reader import Reader, load

__all__ = ["Answer", "Reader", "load"]
__version__ = "0.2.0"
