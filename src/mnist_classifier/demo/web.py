"""Browser drawing demo and JSON prediction API: `mnist-classifier serve`.

    mnist-classifier serve --checkpoint models/simple_cnn_best.pth   # open http://127.0.0.1:8000/
    curl -H 'Content-Type: image/png' --data-binary @digit.png http://127.0.0.1:8000/api/predict

Every input (PNG/JPEG body, multipart upload, JSON pixels) goes through the one
preprocessing of the model's dataset (`reader.framing_of`: `preprocess.to_mnist` for digits),
so the page, the API, `predict` and the desktop demo agree on the same drawing. The API is
described at /openapi.json (and /docs, whose viewer needs internet access). The routes that
save labelled drawings (`/api/examples`) are in collect.py; they read bodies with the functions here.

Speed (`python benchmarks/serve_load.py --workers 2`, 16 clients posting canvas PNGs on
loopback, 2-core VM): per request ~0.5 ms of PNG decode, ~0.5 ms of preprocessing,
0.2 ms (ONNX Runtime) to 0.6 ms (PyTorch) of inference and ~1 ms of HTTP and thread
hand-offs. One process tops out near one core, 230-270 requests/s; `--workers 2` gave
450-700 requests/s: the shared VM's speed varies that much from run to run.
"""
from __future__ import annotations

import io
import json
import logging
import threading
import time
from pathlib import Path

import anyio
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from .. import __version__
from ..answer import Answer, decide, empty_answer
from ..errors import ImageError, UserError
from ..inference import Predictor
from ..images import IMAGE_SIGNATURES, MAX_SIDE, load_image, starts_as_png_or_jpeg
from ..preprocess import CANVAS
from ..reader import framing_of
from ..user_examples import ExampleStore
from .collect import COLLECTION_OFF, example_routes, open_store
from .guards import BODY_TIMEOUT, MAX_BODY, BodyLimit, SameOrigin

FORMATS = ("PNG", "JPEG")  # PIL reads dozens of formats; fewer decoders, less attack surface
WORKERS = 4  # concurrent decodes: bounds memory (a 4096^2 PNG is ~300 MB in float32)
STATIC = Path(__file__).with_name("static")
PAGES = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
         "/style.css": ("style.css", "text/css")}
# The page loads nothing from elsewhere (classrooms are often offline); the policy makes
# the browser enforce that and blocks injected scripts.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

PREDICT_DOC = f"""Classify one drawing. Send **one** of:

* the image itself as the body (`Content-Type: image/png` or `image/jpeg`), any size up
  to {MAX_SIDE}x{MAX_SIDE}, dark-on-light or light-on-dark;
* a multipart upload (`multipart/form-data`) with the image in the field `file`;
* JSON `{{"pixels": [[...28 numbers...], ... 28 rows]}}`: a 28x28 grayscale image,
  numbers 0..255 (or 0..1 floats, as torchvision's `ToTensor` gives them), **white digit on
  black like MNIST** (0 = background).

Every input is cropped, scaled and centred like MNIST before the model sees it; the
result is returned as `preview_png`. The answer's `verdict` is `digit`, `not_a_digit`
(the model does not take the drawing for a digit: `digit` is null, `best_guess` and the
calibrated `confidence` say what it would have guessed) or `empty` (no ink: `digit` and
`best_guess` null, confidence 0, ten zero probabilities). `hint` is null unless a refusal has a
known fix (strokes too thick for the drawing's size: draw it larger). A refusal is a 200 answer. Bodies over {MAX_BODY} bytes get 413, non-images 415,
undecodable images and malformed JSON 422; errors are `{{"detail": "..."}}` (except what uvicorn's
HTTP parser refuses before the app: an invalid method or a URL of many kilobytes, a plain-text 400)."""

_BINARY = {"type": "string", "format": "binary"}
_ROW = {"type": "array", "minItems": CANVAS, "maxItems": CANVAS}
PREDICT_BODY = {"required": True, "content": {  # for /docs and /openapi.json
    "image/png": {"schema": _BINARY}, "image/jpeg": {"schema": _BINARY},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {"file": _BINARY}}},
    "application/json": {"schema": {"type": "object", "required": ["pixels"], "properties": {"pixels": {
        **_ROW, "items": {**_ROW, "items": {"type": "number", "minimum": 0, "maximum": 255}}}}}}}}
PREDICT_RESPONSES = {200: {"description": "verdict, digit, best_guess, label, confidence, probabilities, "
                                          "preview_png, model, latency_ms"},
                     **{code: {"description": text, "content": {"application/json": {"example": {"detail": text}}}}
                        for code, text in ((400, "malformed multipart form"),
                                           (403, "cross-origin request, or a Host this server does not serve"),
                                           (408, f"body not received within {BODY_TIMEOUT:g} s"),
                                           (413, f"body over {MAX_BODY >> 20} MB or image over 4096x4096"),
                                           (415, "not a PNG or JPEG"),
                                           (422, "undecodable image or malformed JSON"))}}


def create_app(predictor: Predictor, user_data: str | Path | ExampleStore | None = None,
               allowed_hosts: tuple[str, ...] = ()) -> FastAPI:
    """The FastAPI app around an already loaded model (tests build it directly).

    `user_data`: where labelled drawings are saved (`POST /api/examples`); None: not collected.
    `allowed_hosts`: names a reverse proxy serves the page as (guards.SameOrigin)."""
    app = FastAPI(title="mnist-classifier", summary="Handwritten-digit recognition", version=__version__,
                  description="Draw at `/`; call `POST /api/predict` from code.")
    # A malformed form is the client's 400, said to the client: not the parser's lines on our stderr
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    app.add_middleware(BodyLimit, limit=MAX_BODY, timeout=BODY_TIMEOUT)
    app.add_middleware(SameOrigin, allowed_hosts=allowed_hosts)  # outermost: a refused request's body is never read
    # finetune teaches digit models: drawings labelled as clothes would be learnt as digits
    store = open_store(user_data, len(predictor.class_names)) if drawable(predictor) else None
    off_reason = COLLECTION_OFF if user_data is None else not_digits_reason(predictor)
    service = Service(predictor, collecting=store is not None)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, error: Exception) -> JSONResponse:
        # Starlette's default is a text page; API clients are promised JSON.
        return JSONResponse({"detail": f"internal error: {type(error).__name__}"}, 500)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(_request: Request, _error: ClientDisconnect) -> Response:
        # The client hung up mid-upload: nobody to answer, nothing to log (it is not our fault).
        return Response(status_code=400)

    @app.post("/api/predict", description=PREDICT_DOC, responses=PREDICT_RESPONSES,
              openapi_extra={"requestBody": PREDICT_BODY})
    async def predict(request: Request) -> Response:
        start = time.perf_counter()
        kind, body = await read_input(request)
        # Decoding and inference are CPU-bound: off the event loop, so slow requests
        # never stall the others (or /api/health).
        payload = await anyio.to_thread.run_sync(service.predict, kind, body, start,
                                                 limiter=service.limiter)
        return Response(payload, media_type="application/json")

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok", "model": predictor.model_name}

    @app.get("/api/model")
    async def model() -> dict:
        return service.model_card

    for route, answer in (("/api/health", health), ("/api/model", model)):
        # HEAD too, for uptime monitors and `curl -I`; kept out of the schema, as the pages' is
        app.add_api_route(route, answer, methods=["HEAD"], include_in_schema=False)

    body_errors = {code: doc for code, doc in PREDICT_RESPONSES.items() if code != 200}
    app.include_router(example_routes(store, service, PREDICT_BODY, body_errors, off_reason))
    for route, (name, media_type) in PAGES.items():
        # HEAD too: link checkers and `curl -I` ask before they fetch
        app.add_api_route(route, static_page(name, media_type), methods=["GET", "HEAD"], include_in_schema=False)
    return app


class Service:
    """The model and what guards it; one per app."""

    def __init__(self, predictor: Predictor, collecting: bool = False):
        self.predictor = predictor
        self.class_names, self.model_name = predictor.class_names, predictor.model_name
        self.model_file = predictor.info.get("file") or predictor.model_name
        self.model = SharedModel(predictor)
        self.frame = framing_of(predictor)  # a Fashion-MNIST model's items fill the frame, as `predict` has them
        self.limiter = anyio.CapacityLimiter(WORKERS)
        self.model_card = model_card(predictor, collecting)

    def predict(self, kind: str, body: bytes, start: float) -> bytes:
        _drawing, answer = self.read_and_answer(kind, body)
        result = self.answer_json(answer) | {"latency_ms": round((time.perf_counter() - start) * 1000, 3)}
        return json.dumps(result).encode()

    async def answer_request(self, request: Request) -> tuple[np.ndarray, Answer]:
        """-> (the drawing in the request's body, the Answer about it), decoded off the event loop."""
        kind, body = await read_input(request)
        return await anyio.to_thread.run_sync(self.read_and_answer, kind, body, limiter=self.limiter)

    def read_and_answer(self, kind: str, body: bytes) -> tuple[np.ndarray, Answer]:
        """-> (the decoded drawing, the Answer about it); bad bodies are HTTPExceptions."""
        drawing = pixels_from_json(body) if kind == "json" else image_from_bytes(body)
        try:
            pre = self.frame(drawing)
        except ImageError as error:
            raise HTTPException(422, str(error)) from None
        if not pre.has_ink:
            return drawing, empty_answer(len(self.class_names))
        probabilities, score = self.model(pre.image)
        threshold = self.predictor.calibration.reject_threshold
        return drawing, decide(probabilities, score, threshold, pre.image, pre.too_bold)

    def answer_json(self, answer: Answer) -> dict:
        return answer.to_json(self.class_names) | {"model": self.model_name}


class SharedModel:
    """One forward pass at a time, shared by the worker threads, batched when they overlap.

    Backends (torch modules, ONNX sessions) aren't promised thread-safe, hence the lock.
    Whoever holds it runs every image queued so far in one batch (4 images cost ~2.4x one),
    and the others find their answer ready: no timer, so a lone request never waits.
    """

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.lock = threading.Lock()
        self.queue: list[list] = []  # [image, (probabilities, score) or exception or None]
        self.queue_lock = threading.Lock()

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """-> (calibrated probabilities, digit score) of one image."""
        slot = [image, None]
        with self.queue_lock:
            self.queue.append(slot)
        with self.lock:
            if slot[1] is None:  # nobody has run it yet: run it and whatever else waits
                with self.queue_lock:
                    batch, self.queue = self.queue, []
                try:
                    results = list(zip(*self.predictor.assess(np.stack([item[0] for item in batch]))))
                except Exception as error:  # every waiter gets it, none hangs
                    results = [error] * len(batch)
                for item, result in zip(batch, results):
                    item[1] = result
        if isinstance(slot[1], Exception):
            raise slot[1]
        return slot[1]


def model_card(predictor: Predictor, collecting: bool = False) -> dict:
    """What /api/model says: which model and file answer, how good it is, and whether drawings are collected."""
    info = predictor.info
    keys = ("parameters", "validation_accuracy", "test_accuracy", "dataset", "epoch", "file")
    calibration = predictor.calibration
    return {"name": predictor.model_name, **{key: info.get(key) for key in keys},
            # the checkpoint's (or its export's) finetune record: the page tells users their own model answers
            "user_model": bool(info.get("fine_tuned")),
            "collecting": collecting,
            "class_names": list(predictor.class_names), "drawable": drawable(predictor),
            "calibrated": calibration.fitted, "temperature": calibration.temperature,
            "reject_threshold": calibration.reject_threshold}


def not_digits_reason(predictor: Predictor) -> str:
    return (f"labelling is off: {predictor.model_name} reads {predictor.info.get('dataset')}, and `finetune` "
            "learns digits from labelled drawings")


def drawable(predictor: Predictor) -> bool:
    """Whether the model reads drawings (digits), so that labelled drawings can teach it."""
    from ..datasets import get_dataset_spec

    try:
        return get_dataset_spec(predictor.info.get("dataset", "mnist")).drawable
    except UserError:  # a dataset this version does not know: don't promise drawing works
        return False


# ------------------------------------------------------------------- request bodies


async def read_input(request: Request) -> tuple[str, bytes]:
    """-> ("json" | "image", body bytes), by Content-Type. BodyLimit caps the size."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(422, "multipart upload needs the image in a file field named 'file'")
            return "image", await upload.read()
    body = await request.body()
    # `curl -d '{...}'` labels JSON as a form, and a PNG sent with a JSON header is still a PNG:
    # an object is never an image, nor an image an object, so sniff.
    if body.startswith(IMAGE_SIGNATURES):
        return "image", body
    is_json = media_type.endswith("json") or body[:64].lstrip()[:1] in (b"{", b"[")
    return ("json" if is_json else "image"), body


def image_from_bytes(body: bytes) -> np.ndarray:
    if not body:
        raise HTTPException(422, 'empty body: send a PNG/JPEG, a multipart "file" or JSON {"pixels": ...}')
    try:  # (PIL's bomb warning, over ~89 Mpx: serve filters it, errors.hide_image_size_warning)
        image = Image.open(io.BytesIO(body), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError:
        raise HTTPException(413, f"image larger than {MAX_SIDE} pixels a side; resize it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        if starts_as_png_or_jpeg(body[:8]):  # it is one, cut off or damaged before its pixels
            raise HTTPException(422, "the PNG or JPEG is truncated or corrupt: send the whole file") from None
        raise HTTPException(415, "not a PNG or JPEG image") from None
    with image:
        # The header gives the size before any pixel is decoded, so a bomb costs nothing.
        if image.width > MAX_SIDE or image.height > MAX_SIDE:
            raise HTTPException(413, f"image is {image.width}x{image.height}, larger than "
                                f"{MAX_SIDE} pixels a side; resize it first")
        try:
            return load_image(image)
        except ImageError as error:  # truncated or corrupt pixel data
            raise HTTPException(422, str(error)) from None


def pixels_from_json(body: bytes) -> np.ndarray:
    """{"pixels": 28x28 numbers 0..255, or 0..1} -> uint8 array 0..255; anything else is a 422."""
    out_of_range = HTTPException(422, "pixels must be finite numbers 0..255 (white digit on black)")
    try:
        data = json.loads(body, parse_constant=refuse_constant, parse_int=bounded_int)
    except OverflowError:
        raise out_of_range from None
    except (ValueError, RecursionError) as error:
        raise HTTPException(422, f"body is not valid JSON ({error})") from None
    rows = data.get("pixels") if isinstance(data, dict) else None
    shape_ok = (isinstance(rows, list) and len(rows) == CANVAS
                and all(isinstance(row, list) and len(row) == CANVAS for row in rows))
    if not shape_ok:
        raise HTTPException(422, f'expected {{"pixels": {CANVAS} rows of {CANVAS} numbers 0..255}}')
    # bool is an int subclass in Python, but true/false are not pixel values.
    if not all(type(value) in (int, float) for row in rows for value in row):
        raise HTTPException(422, "pixels must all be numbers 0..255")
    array = np.array(rows, dtype=np.float64)  # bounded_int keeps every integer within float range
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise out_of_range
    if array.max() <= 1:  # 0..1 (torchvision's ToTensor scale): rounding as 0..255 would keep only a 0/1 mask
        array = array * 255
    return np.rint(array).astype(np.uint8)


def bounded_int(text: str) -> int:
    # Python refuses to convert over 4,300 digits with a hint only a server could follow:
    # a number that long is out of range anyway.
    if len(text.lstrip("-")) > 20:
        raise OverflowError(text[:20])
    return int(text)


def refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def static_page(name: str, media_type: str):
    # Read once at start-up and served from memory: no URL maps onto the file system.
    content = (STATIC / name).read_bytes()

    async def page() -> Response:
        return Response(content, media_type=media_type, headers=PAGE_HEADERS)

    return page
