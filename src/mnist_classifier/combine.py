"""Test-time augmentation and checkpoint ensembles: several opinions, one averaged answer.

    mnist-classifier evaluate --tta                                  # 5 views of every digit, 10 of clothes
    mnist-classifier evaluate --ensemble a_best.pth b_best.pth c_best.pth --tta

Both average class probabilities (softmax outputs), not logits, so that no single
over-confident member or view can outvote the others. The TTA views are the image
itself and copies moved by one pixel up, down, left and right: training augmentation
already moves digits by up to two pixels, so every view is an image the model has
learned to read. Flips and large rotations are left out for digits on purpose: they
turn a 6 into a 9 and a 2 into a 5. A dataset whose training mirrors its images
(Fashion-MNIST: a shirt mirrored is still a shirt) gets the mirror of each view too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .augment import AUGMENTATIONS, require_augmentation
from .checkpoint import stored_class_names, weights_sha256
from .data import Normalization, Split
from .datasets import DatasetSpec
from .errors import UserError
from .evaluation import compute_logits

# (dx, dy) in pixels; the first view is the image as it is.
TTA_SHIFTS: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))

View = tuple[int, int, bool]  # (dx, dy, mirrored): mirrored left-right first, then moved
ORIGINAL_ONLY: tuple[View, ...] = ((0, 0, False),)


def tta_views(spec: DatasetSpec) -> tuple[View, ...]:
    """The views `--tta` averages for a dataset: changes its augmentation policy declares harmless to the label."""
    policy = AUGMENTATIONS[require_augmentation(spec.augmentation, spec.name)]
    mirrored = (False, True) if policy.mirrors else (False,)
    return tuple((dx, dy, mirror) for mirror in mirrored for dx, dy in TTA_SHIFTS)


def shift_images(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """uint8 (N, H, W) -> the same images moved dx right and dy down, background filling in."""
    if dx == 0 and dy == 0:
        return images
    pad = max(abs(dx), abs(dy))
    height, width = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad))
    return padded[..., pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def view_images(images: torch.Tensor, view: View) -> torch.Tensor:
    dx, dy, mirrored = view
    return shift_images(images.flip(-1) if mirrored else images, dx, dy)


def averaged_probabilities(members: Sequence[tuple[nn.Module, Normalization]], split: Split,
                           views: Sequence[View] = ORIGINAL_ONLY) -> torch.Tensor:
    """Mean class probabilities (N, C) over every member and every view of each image."""
    return averaged_probabilities_at(members, split, views, [[1.0] * len(members)])[0]


@torch.no_grad()
def averaged_probabilities_at(members: Sequence[tuple[nn.Module, Normalization]], split: Split,
                              views: Sequence[View], temperature_sets: Sequence[Sequence[float]]) -> list[torch.Tensor]:
    """averaged_probabilities once per set of member temperatures (one per member), from one
    forward pass: evaluate compares raw (all 1) and calibrated confidences this way."""
    if not members or not views:
        raise ValueError("averaging needs at least one member and one view")
    totals: list = [0] * len(temperature_sets)  # running sums; 0 + a tensor is the tensor
    for index, (model, norm) in enumerate(members):
        for view in views:
            logits = compute_logits(model, Split(view_images(split.images, view), split.labels), norm).float()
            for slot, temperatures in enumerate(temperature_sets):
                probs = torch.softmax(logits / temperatures[index], dim=1)
                totals[slot] = totals[slot] + probs
    return [total / (len(members) * len(views)) for total in totals]


def check_trained_on_the_views(payloads: Sequence[dict[str, Any]], checkpoints: Sequence[str | Path]) -> None:
    """`--tta` only for models that trained with their dataset's augmentation: one that never saw a
    shifted or mirrored image reads them worse (a Fashion-MNIST model trained without it: 78.1% -> 71.8%)."""
    for payload, path in zip(payloads, checkpoints):
        if not (payload.get("config") or {}).get("augment", True):
            raise UserError(f"{path} trained without augmentation (augment: false), so the shifted views of "
                            "--tta are new to it: evaluate it without --tta")


def check_members_agree(payloads: Sequence[dict[str, Any]], checkpoints: Sequence[str | Path]) -> None:
    """Averaging only means something when every member answers the same question."""
    named = [Path(path).resolve() for path in checkpoints]
    twice = next((path for index, path in enumerate(checkpoints) if named[index] in named[:index]), None)
    if twice is not None:
        raise UserError(f"{twice} is named twice: an ensemble averages different checkpoints")
    def question(payload: dict[str, Any], path: str | Path) -> dict[str, Any]:  # files without them: digits
        return {"dataset": payload.get("dataset", "mnist"), "class_names": stored_class_names(payload, path)}

    first = question(payloads[0], checkpoints[0])
    for payload, path in zip(payloads[1:], checkpoints[1:]):
        asked = question(payload, path)
        for key in first:
            if asked[key] != first[key]:
                raise UserError(f"{path} has {key} {asked[key]!r} but {checkpoints[0]} has "
                                f"{first[key]!r}: ensemble checkpoints trained on the same dataset")
    weights = [weights_sha256(payload) for payload in payloads]
    copy = next((index for index, digest in enumerate(weights) if digest in weights[:index]), None)
    if copy is not None:  # a copy of a file, or one calibrated again: the same model twice
        original = checkpoints[weights.index(weights[copy])]
        raise UserError(f"{checkpoints[copy]} holds the same weights as {original}: an ensemble averages "
                        "different models; name each once")


def combined_name(payloads: Sequence[dict[str, Any]], tta: bool) -> str:
    """A label for titles and the default report folder, e.g. improved_cnn_ensemble3_tta."""
    names = sorted({payload["model_name"] for payload in payloads})
    label = "+".join(names)
    if len(payloads) > 1:
        label += f"_ensemble{len(payloads)}"
    return label + ("_tta" if tta else "")


def combined_payload(payloads: Sequence[dict[str, Any]], checkpoints: Sequence[str | Path],
                     views: Sequence[View] = ORIGINAL_ONLY) -> dict[str, Any]:
    """What the report shows about where the predictions came from."""
    tta = len(views) > 1
    if len(payloads) == 1 and not tta:
        return payloads[0]
    single = len(payloads) == 1
    first = payloads[0]
    return {
        "model_name": combined_name(payloads, tta),
        "dataset": first.get("dataset", "mnist"),
        "class_names": first.get("class_names"),
        # one training history is only the truth about a single member
        "history": first.get("history") if single else None,
        "config": first.get("config") if single else None,
        "epoch": first.get("epoch") if single else None,
        "accuracy": first.get("accuracy") if single else None,
        "members": [str(path) for path in checkpoints],
        "tta_views": len(views),
        "tta_mirrored": any(mirrored for _, _, mirrored in views),
    }
