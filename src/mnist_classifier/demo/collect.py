"""The HTTP side of collecting the user's labelled drawings (the files are user_examples.py's).

    curl -H 'Content-Type: image/png' --data-binary @seven.png 'http://127.0.0.1:8000/api/examples?label=7'
    curl -X DELETE http://127.0.0.1:8000/api/examples/last      # undo the last one saved
    curl http://127.0.0.1:8000/api/examples/stats               # examples per label

`POST /api/examples` takes every body `/api/predict` takes and reads it with the same code
(web.py), runs the model so that the example records the answer it got, and saves the
drawing, its 28x28 input and one line in `examples.jsonl`. Nothing in a request names a
file: the store names them. `serve --no-collect` turns the three routes into 403s.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Callable, Protocol

import anyio
import cv2
import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from ..answer import Answer
from ..errors import UserError
from ..user_examples import MAX_BYTES, MAX_EXAMPLES, ExampleStore, Saved

COLLECTION_OFF = "collecting labelled drawings is off: the server was started with --no-collect"
STORE_FAILED = 507  # Insufficient Storage: the store is full (count or size limit) or cannot be written
NOTHING_TO_UNDO = "nothing to undo: no labelled drawings are stored"
ADD_DOC = """Save a drawing with what it really is, for `mnist-classifier finetune`. The body is
anything `POST /api/predict` takes; `label` (query) is the class index. The model answers it
first, and the example records that answer. An empty drawing is a 422."""
ADD_RESPONSES = {201: {"description": "id, label, counts (one per label), total, answer (as /api/predict)"}}


class Answerer(Protocol):
    """What the routes need from web.py's Service. A Protocol: web.py includes these routes, so
    importing it here would make an import cycle."""

    class_names: list[str]
    model_file: str  # what an example records as its model: the file that answered (as the desktop demo)

    async def answer_request(self, request: Request) -> tuple[np.ndarray, Answer]: ...

    def answer_json(self, answer: Answer) -> dict: ...


def open_store(user_data: str | Path | ExampleStore | None, num_classes: int) -> ExampleStore | None:
    """The store the routes write to; None (collection off) when there is no folder. Tests may pass a store."""
    if user_data is None or isinstance(user_data, ExampleStore):
        return user_data
    # Workers of `serve --workers N` log nowhere else: a skipped corrupt line goes to stderr.
    return ExampleStore(user_data, num_classes=num_classes, warn=lambda line: print(line, file=sys.stderr))


def example_routes(store: ExampleStore | None, service: Answerer, request_body: dict,
                   body_errors: dict, off_reason: str = COLLECTION_OFF) -> APIRouter:
    """The three /api/examples routes. `request_body`, `body_errors`: predict's OpenAPI docs, shared;
    `off_reason`: the 403's detail when there is no store."""

    def require(store: ExampleStore | None) -> ExampleStore:
        if store is None:
            raise HTTPException(403, off_reason)
        return store

    router = APIRouter()
    num_classes = len(service.class_names)
    label_doc = {"name": "label", "in": "query", "required": True,
                 "description": "what the drawing really is: the class index",
                 "schema": {"type": "integer", "minimum": 0, "maximum": num_classes - 1}}

    @router.post("/api/examples", status_code=201, description=ADD_DOC,
                 responses={**ADD_RESPONSES, **body_errors, **store_responses(507),
                            422: error_doc(f"{body_errors[422]['description']}, label missing or not "
                                           "a class index, or an empty drawing")},
                 openapi_extra={"parameters": [label_doc], "requestBody": request_body})
    async def add_example(request: Request) -> JSONResponse:
        collecting = require(store)
        label = parse_label(request.query_params.getlist("label"), num_classes)
        drawing, answer = await service.answer_request(request)
        if not answer.has_ink:
            raise HTTPException(422, "nothing to save: the drawing is empty")
        saved = await in_thread(save, collecting, drawing, label, service.model_file, answer)
        result = {"id": saved.example.id, "label": label, **counts_json(saved.counts),
                  "answer": service.answer_json(answer)}
        return JSONResponse(result, status_code=201)

    @router.delete("/api/examples/last", description="Remove the example saved last, by anyone.",
                   responses={200: {"description": "removed (its id and label), counts, total"},
                              404: error_doc(NOTHING_TO_UNDO), **store_responses(507)})
    async def undo_example() -> dict:
        undone: Saved | None = await in_thread(require(store).undo)
        if undone is None:
            raise HTTPException(404, NOTHING_TO_UNDO)
        return {"removed": undone.example.id, "label": undone.example.label, **counts_json(undone.counts)}

    @router.get("/api/examples/stats", description="How many labelled drawings are stored, per label.",
                responses={200: {"description": "counts (one per label), total"}, **store_responses(507)})
    async def example_stats() -> dict:
        return counts_json(await in_thread(require(store).counts))

    # HEAD as for the health check: `curl -I` and monitors got 405 here
    router.add_api_route("/api/examples/stats", example_stats, methods=["HEAD"], include_in_schema=False)
    return router


def error_doc(text: str) -> dict:
    return {"description": text, "content": {"application/json": {"example": {"detail": text}}}}


def store_responses(*codes: int) -> dict:
    """OpenAPI docs of the errors every examples route can answer (403) and of `codes`."""
    full = (f"the store is full ({MAX_EXAMPLES:,} examples or {MAX_BYTES // (1024 * 1024)} MB by default: "
            "the detail names the limit) or cannot be written")
    texts = {403: COLLECTION_OFF, 507: full}
    return {code: error_doc(texts[code]) for code in (403, *codes)}


def parse_label(values: list[str], num_classes: int) -> int:
    """The one `label` query value as a class index; anything else is a 422."""
    # ASCII digits only: int() would also take "٧", " 7" and "+7".
    if len(values) != 1 or not re.fullmatch(r"[0-9]{1,3}", values[0]) or int(values[0]) >= num_classes:
        given = "none" if not values else ", ".join(repr(value) for value in values)
        raise HTTPException(422, f"?label= must be one whole number 0..{num_classes - 1} "
                                 f"(what the drawing really is); got {given}")
    return int(values[0])


async def in_thread(call: Callable[..., Any], *args: Any) -> Any:
    """Run a store call off the event loop (file I/O, and a lock other processes may hold).

    Not in the decoders' limiter: a call waiting for the lock must not hold up predictions."""
    try:
        return await anyio.to_thread.run_sync(call, *args)
    except UserError as error:  # a limit, a full disk, a lock held too long: the message says which
        raise HTTPException(STORE_FAILED, str(error)) from None
    except OSError as error:  # e.g. a file the store could not remove on undo
        raise HTTPException(STORE_FAILED, f"the labelled drawings cannot be changed ({error})") from None


def save(store: ExampleStore, drawing: np.ndarray, label: int, model: str, answer: Answer) -> Saved:
    # answer.preview is the 28x28 input the model saw: what finetune learns from.
    return store.add(storable(drawing), answer.preview, label, model, answer)


def counts_json(counts: list[int]) -> dict:
    return {"counts": counts, "total": sum(counts)}


def storable(drawing: np.ndarray) -> np.ndarray:
    """The decoded drawing as 8-bit gray, BGR or BGRA: what OpenCV writes as PNG.

    PIL hands over RGB(A), gray + alpha, and for 16-bit or float images wider types; those
    are stretched to 0..255 (rare, and the 28x28 input the model saw is kept exactly)."""
    if drawing.dtype == np.bool_:
        drawing = drawing.astype(np.uint8) * 255
    elif drawing.dtype != np.uint8:
        drawing = cv2.normalize(drawing.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if drawing.ndim == 2:
        return drawing
    channels = drawing.shape[2]
    if channels == 2:  # gray + alpha
        gray, alpha = drawing[..., 0], drawing[..., 1]
        return np.dstack([gray, gray, gray, alpha])
    if channels == 1:
        return drawing[..., 0]
    return cv2.cvtColor(drawing, cv2.COLOR_RGB2BGR if channels == 3 else cv2.COLOR_RGBA2BGRA)
