"""`python -m mnist_classifier`: the same as the `mnist-classifier` command (cli.py)."""
import sys

from .cli import main

sys.exit(main())
