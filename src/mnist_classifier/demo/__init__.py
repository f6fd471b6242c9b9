"""The interactive front ends: `desktop` (the OpenCV drawing window) and `web` (the
browser demo and JSON API). Both go through `preprocess` and `inference`, so the same
drawing gets the same answer; nothing below this package imports it."""
