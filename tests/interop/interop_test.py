#!/usr/bin/env python3
"""Interoperability test: mnist-api's Open Inference Protocol v2 REST API against the real clients.

Runs NVIDIA's tritonclient.http.InferenceServerClient and KServe's InferenceRESTClient (protocol
v2) against a running mnist-api, on the first --count MNIST test digits, and compares every answer
with the server's own POST /predict (multipart, field `file`, PNG) for the same digits:

  * health: is_server_live, is_server_ready, is_model_ready (both clients)
  * metadata: get_server_metadata (extension `binary_tensor_data` advertised),
    get_model_metadata (name `mnist`, inputs, outputs `probabilities` and `prediction`)
  * infer, for each input encoding
      FP32  [N,1,28,28]  (pixels/255 - 0.1307) / 0.3081, computed in float32 as the server does
      UINT8 [N,28,28]    raw pixels
      BYTES [N]          one PNG file per digit
    with the input as binary data (Inference-Header-Content-Length) and as JSON, and the outputs
    requested as binary data and as JSON (and, for tritonclient, with no outputs named, which
    makes it ask for `binary_data_output: true`).
  * errors: unknown model -> 4xx with a v2 `{"error": ...}` body that the client can read;
    bad token -> 401 on infer (health and metadata stay open).

Raw PNG bytes are not UTF-8, so neither client can put them in a JSON `data` array: with
binary_data=False both refuse client-side before sending anything. The test checks that refusal
and records the case as skipped.

The predicted digit must equal /predict's exactly; every probability must be within --prob-atol
of /predict's. /predict's own accuracy on the digits must reach --min-accuracy.

Exit status 0 when every check passed, 1 on any failure (each printed as `FAIL: ...`), 2 on a
usage error. The last line is `N passed, M failed`.

Usage:
  interop_test.py --url http://127.0.0.1:PORT --token TOKEN --mnist-dir ../shared/mnist
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import struct
import sys
import time
import traceback
import urllib.error
import urllib.request
import uuid
import zlib
from urllib.parse import urlsplit

import numpy as np

MODEL = "mnist"
MEAN = np.float32(0.1307)
STD = np.float32(0.3081)
DATATYPES = ("FP32", "UINT8", "BYTES")


# --- data -------------------------------------------------------------------------------------


def _open_idx(mnist_dir: str, stem: str) -> bytes:
    for name in (stem, stem + ".gz"):
        path = os.path.join(mnist_dir, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                raw = f.read()
            return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    raise FileNotFoundError(f"neither {stem} nor {stem}.gz in {mnist_dir}")


def load_mnist_test(mnist_dir: str, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """First `count` test images (uint8 [n,28,28]) and labels (uint8 [n])."""
    images = _open_idx(mnist_dir, "t10k-images-idx3-ubyte")
    labels = _open_idx(mnist_dir, "t10k-labels-idx1-ubyte")
    magic, n, rows, cols = struct.unpack(">IIII", images[:16])
    if magic != 2051 or (rows, cols) != (28, 28):
        raise ValueError(f"not an MNIST image file (magic {magic}, {rows}x{cols})")
    lmagic, ln = struct.unpack(">II", labels[:8])
    if lmagic != 2049 or ln != n:
        raise ValueError(f"not the matching MNIST label file (magic {lmagic}, {ln} labels)")
    k = n if count is None else min(count, n)
    x = np.frombuffer(images, dtype=np.uint8, count=k * 784, offset=16).reshape(k, 28, 28)
    y = np.frombuffer(labels, dtype=np.uint8, count=k, offset=8)
    return x.copy(), y.copy()


def png_encode_gray(img: np.ndarray) -> bytes:
    """Minimal PNG encoder: 8-bit greyscale, no interlace, filter 0 on every row."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 [n,28,28] -> float32 [n,1,28,28], in float32 like the server's normalize_into."""
    x = images.astype(np.float32) / np.float32(255.0)
    return ((x - MEAN) / STD).astype(np.float32).reshape(-1, 1, 28, 28)


def encode_inputs(images: np.ndarray, datatype: str) -> np.ndarray:
    if datatype == "FP32":
        return normalize(images)
    if datatype == "UINT8":
        return np.ascontiguousarray(images, dtype=np.uint8)
    if datatype == "BYTES":
        return np.array([png_encode_gray(im) for im in images], dtype=np.object_)
    raise ValueError(datatype)


# --- the server's own /predict ------------------------------------------------------------------


def multipart_body(files: list[bytes]) -> tuple[bytes, str]:
    boundary = "interop-" + uuid.uuid4().hex
    parts = []
    for i, data in enumerate(files):
        parts.append(
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"digit{i}.png\"\r\nContent-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def http_request(method: str, url: str, body: bytes | None = None,
                 headers: dict | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers.items()), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


def predict_reference(base: str, token: str | None, pngs: list[bytes], chunk: int):
    """/predict answers for every PNG: list of (digit, probabilities float32[10])."""
    out = []
    for start in range(0, len(pngs), chunk):
        files = pngs[start:start + chunk]
        body, ctype = multipart_body(files)
        headers = {"Content-Type": ctype}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, _, content = http_request("POST", base + "/predict", body, headers)
        if status != 200:
            raise RuntimeError(f"/predict answered {status}: {content[:300]!r}")
        doc = json.loads(content)
        items = doc["predictions"] if "predictions" in doc else [doc]
        if len(items) != len(files):
            raise RuntimeError(f"/predict gave {len(items)} answers for {len(files)} files")
        for it in items:
            probs = it.get("probabilities")
            out.append((int(it["prediction"]),
                        None if probs is None else np.asarray(probs, dtype=np.float32)))
    return out


# --- bookkeeping --------------------------------------------------------------------------------


class Checks:
    def __init__(self, verbose: bool):
        self.passed = 0
        self.failed: list[str] = []
        self.skipped: list[str] = []
        self.verbose = verbose

    def ok(self, name: str, detail: str = ""):
        self.passed += 1
        print(f"ok    {name}" + (f"  ({detail})" if detail and self.verbose else ""))

    def fail(self, name: str, why: str):
        self.failed.append(f"{name}: {why}")
        print(f"FAIL: {name}: {why}")

    def skip(self, name: str, why: str):
        self.skipped.append(name)
        print(f"skip  {name}: {why}")

    def run(self, name: str, fn, *args, **kwargs):
        """Runs fn; an exception is a failure of `name`. Returns fn's value or None."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - every client error is a test failure here
            detail = f"{type(e).__name__}: {e}"
            if self.verbose:
                detail += "\n" + traceback.format_exc()
            self.fail(name, detail)
            return None


def compare(checks: Checks, name: str, pred, probs, ref, ids_sent=None, id_got=None,
            atol: float = 1e-4, model_name=MODEL, offset: int = 0):
    """Compares one batch's outputs with /predict's answers for the same digits."""
    problems = []
    n = len(ref)
    if model_name != MODEL:
        problems.append(f"model_name {model_name!r}, expected {MODEL!r}")
    if ids_sent is not None and id_got != ids_sent:
        problems.append(f"response id {id_got!r}, request id {ids_sent!r}")
    if pred is None:
        problems.append("no output 'prediction'")
    else:
        if not np.issubdtype(pred.dtype, np.integer):
            problems.append(f"'prediction' dtype {pred.dtype}, expected an integer type")
        p = pred.reshape(-1)
        if p.shape != (n,):
            problems.append(f"'prediction' shape {list(pred.shape)}, expected [{n}]")
        else:
            want = np.array([r[0] for r in ref])
            bad = np.nonzero(p != want)[0]
            if len(bad):
                i = int(bad[0])
                problems.append(f"{len(bad)}/{n} predictions differ from /predict "
                                f"(first: test digit {offset + i}: {int(p[i])} vs {int(want[i])})")
    if probs is None:
        problems.append("no output 'probabilities'")
    else:
        if probs.dtype != np.float32:
            problems.append(f"'probabilities' dtype {probs.dtype}, expected float32 (FP32)")
        if list(probs.shape) != [n, 10]:
            problems.append(f"'probabilities' shape {list(probs.shape)}, expected [{n}, 10]")
        elif all(r[1] is not None for r in ref):
            want = np.stack([r[1] for r in ref])
            diff = np.abs(probs.astype(np.float64) - want.astype(np.float64))
            if float(diff.max()) > atol:
                i = int(np.argmax(diff.max(axis=1)))
                problems.append(f"probabilities differ from /predict by up to {diff.max():.3g} "
                                f"(test digit {offset + i}; tolerance {atol})")
    if problems:
        checks.fail(name, "; ".join(problems))
    else:
        checks.ok(name, f"{n} digits")


def batches(n: int, size: int):
    for s in range(0, n, size):
        yield s, min(n, s + size)


def pick_input_names(metadata: dict | None, override: str | None) -> dict:
    """Input tensor name for each datatype: the metadata input of that datatype, else the first
    input (a server may accept several datatypes under one name), else --input-name."""
    names = {}
    inputs = (metadata or {}).get("inputs") or []
    for dt in DATATYPES:
        if override:
            names[dt] = override
            continue
        match = [i["name"] for i in inputs if i.get("datatype") == dt]
        names[dt] = match[0] if match else (inputs[0]["name"] if inputs else "input")
    return names


def check_model_metadata(checks: Checks, who: str, md: dict):
    problems = []
    if md.get("name") != MODEL:
        problems.append(f"name {md.get('name')!r}, expected {MODEL!r}")
    for key in ("inputs", "outputs"):
        tensors = md.get(key)
        if not isinstance(tensors, list) or not tensors:
            problems.append(f"'{key}' missing or empty")
            continue
        for t in tensors:
            if not isinstance(t, dict) or not {"name", "datatype", "shape"} <= set(t):
                problems.append(f"{key} entry {t!r} lacks name/datatype/shape")
            elif not all(isinstance(d, int) for d in t["shape"]):
                problems.append(f"{key} {t['name']!r} shape {t['shape']!r} is not a list of integers")
    outs = {t.get("name"): t for t in md.get("outputs") or [] if isinstance(t, dict)}
    for name in ("probabilities", "prediction"):
        if name not in outs:
            problems.append(f"no output {name!r} (outputs: {sorted(map(str, outs))})")
    if "probabilities" in outs and outs["probabilities"].get("datatype") != "FP32":
        problems.append(f"output 'probabilities' datatype {outs['probabilities'].get('datatype')!r}, expected FP32")
    if "platform" not in md:
        problems.append("no 'platform' (required by the spec's $metadata_model_response)")
    if problems:
        checks.fail(f"{who} get_model_metadata", "; ".join(problems))
    else:
        ins = ", ".join(f"{t['name']} {t['datatype']} {t['shape']}" for t in md["inputs"])
        checks.ok(f"{who} get_model_metadata", f"inputs: {ins}")


# --- tritonclient -------------------------------------------------------------------------------


def run_tritonclient(args, checks: Checks, images, ref):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    who = "tritonclient"
    parts = urlsplit(args.url)
    # tritonclient wants host:port[/prefix] without the scheme.
    client = httpclient.InferenceServerClient(
        url=parts.netloc + parts.path.rstrip("/"), ssl=parts.scheme == "https",
        network_timeout=120.0, connection_timeout=30.0)

    def hdr():
        # A fresh dict per call: infer() writes Inference-Header-Content-Length into the dict it
        # is given, so a shared dict would carry a stale length into the next request.
        return {"Authorization": f"Bearer {args.token}"} if args.token else {}

    try:
        for name, fn in (("is_server_live", lambda: client.is_server_live(headers=hdr())),
                         ("is_server_ready", lambda: client.is_server_ready(headers=hdr())),
                         ("is_model_ready", lambda: client.is_model_ready(MODEL, headers=hdr()))):
            v = checks.run(f"{who} {name}", fn)
            if v is True:
                checks.ok(f"{who} {name}")
            elif v is not None:
                checks.fail(f"{who} {name}", f"returned {v!r} (the server answered other than 200)")

        smd = checks.run(f"{who} get_server_metadata",
                         lambda: client.get_server_metadata(headers=hdr()))
        if smd is not None:
            probs = []
            for k in ("name", "version", "extensions"):
                if k not in smd:
                    probs.append(f"no {k!r}")
            if "binary_tensor_data" not in (smd.get("extensions") or []):
                probs.append(f"extensions {smd.get('extensions')!r} lack 'binary_tensor_data'")
            if probs:
                checks.fail(f"{who} get_server_metadata", "; ".join(probs))
            else:
                checks.ok(f"{who} get_server_metadata", json.dumps(smd))

        md = checks.run(f"{who} get_model_metadata",
                        lambda: client.get_model_metadata(MODEL, headers=hdr()))
        if md is not None:
            check_model_metadata(checks, who, md)
        names = pick_input_names(md, args.input_name)

        for dt in DATATYPES:
            for in_bin in (True, False):
                for out_mode in ("binary", "json", "default"):
                    if out_mode == "default" and not in_bin:
                        continue  # one no-outputs-named case per datatype is enough
                    case = f"{who} infer {dt} input={'binary' if in_bin else 'json'} outputs={out_mode}"
                    triton_case(args, checks, case, client, httpclient, InferenceServerException,
                                hdr, names[dt], dt, in_bin, out_mode, images, ref)

        # Errors must come back as v2 error objects the client can read.
        x = httpclient.InferInput(names["UINT8"], [1, 28, 28], "UINT8")
        x.set_data_from_numpy(images[:1], binary_data=True)
        try:
            client.infer("no-such-model", [x], headers=hdr())
            checks.fail(f"{who} infer unknown model", "no error raised")
        except InferenceServerException as e:
            msg = e.message() or ""
            if e.status() is None or not str(e.status()).startswith("4"):
                checks.fail(f"{who} infer unknown model", f"status {e.status()}, expected 4xx")
            elif msg.startswith("an exception occurred in the client"):
                checks.fail(f"{who} infer unknown model",
                            f"the error body is not a v2 {{\"error\": ...}} object: {msg[:200]}")
            else:
                checks.ok(f"{who} infer unknown model", f"{e.status()}: {msg}")

        bad = httpclient.InferInput(names["UINT8"], [1, 27, 28], "UINT8")
        bad.set_data_from_numpy(images[:1, :27], binary_data=True)
        try:
            client.infer(MODEL, [bad], headers=hdr())
            checks.fail(f"{who} infer wrong shape", "no error raised for shape [1,27,28]")
        except InferenceServerException as e:
            msg = e.message() or ""
            if not str(e.status()).startswith("4") or msg.startswith("an exception occurred"):
                checks.fail(f"{who} infer wrong shape", f"status {e.status()}: {msg[:200]}")
            else:
                checks.ok(f"{who} infer wrong shape", f"{e.status()}: {msg}")

        if args.token:
            try:
                live = client.is_model_ready(MODEL, headers={"Authorization": "Bearer not-a-token"})
                # Health and metadata are open, as /health is: probes carry no token, and a
                # stale one must not make a healthy server look down.
                if live:
                    checks.ok(f"{who} readiness is open, whatever the token")
                else:
                    checks.fail(f"{who} readiness", "is_model_ready was False with a bad token")
            except Exception as e:  # noqa: BLE001
                checks.fail(f"{who} bad token", f"{type(e).__name__}: {e}")
            try:
                client.infer(MODEL, [x], headers={"Authorization": "Bearer not-a-token"})
                checks.fail(f"{who} infer bad token", "no error raised")
            except InferenceServerException as e:
                if str(e.status()) != "401":
                    checks.fail(f"{who} infer bad token", f"status {e.status()}, expected 401")
                else:
                    checks.ok(f"{who} infer bad token", f"401: {e.message()}")
    finally:
        client.close()


def triton_case(args, checks, case, client, httpclient, InferenceServerException, hdr,
                input_name, dt, in_bin, out_mode, images, ref):
    n_total = len(images)
    for s, e in batches(n_total, args.batch_size):
        arr = encode_inputs(images[s:e], dt)
        inp = httpclient.InferInput(input_name, list(arr.shape), dt)
        if dt == "BYTES" and not in_bin:
            try:
                inp.set_data_from_numpy(arr, binary_data=False)
                checks.fail(case, "the client accepted non-UTF-8 PNG bytes for JSON")
            except InferenceServerException:
                checks.skip(case, "tritonclient refuses raw PNG bytes in JSON (not UTF-8); "
                                  "send them as binary data")
            return
        inp.set_data_from_numpy(arr, binary_data=in_bin)
        if out_mode == "default":
            outputs = None  # tritonclient then sends parameters.binary_data_output = true
        else:
            b = out_mode == "binary"
            outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=b),
                       httpclient.InferRequestedOutput("prediction", binary_data=b)]
        rid = f"interop-{uuid.uuid4().hex[:8]}"
        res = checks.run(case, client.infer, MODEL, [inp], outputs=outputs, request_id=rid,
                         headers=hdr())
        if res is None:
            return
        resp = res.get_response()
        problems = []
        for o in resp.get("outputs", []):
            has_bin = "binary_data_size" in (o.get("parameters") or {})
            want_bin = out_mode in ("binary", "default")
            if has_bin != want_bin:
                problems.append(f"output {o.get('name')!r} came as "
                                f"{'binary' if has_bin else 'JSON'}, asked for "
                                f"{'binary' if want_bin else 'JSON'}")
        if problems:
            checks.fail(case, "; ".join(problems))
            return
        try:
            pred, probs = res.as_numpy("prediction"), res.as_numpy("probabilities")
        except Exception as ex:  # noqa: BLE001
            checks.fail(case, f"cannot read outputs: {type(ex).__name__}: {ex}")
            return
        before = len(checks.failed)
        compare(checks, f"{case} [{s}:{e}]", pred, probs, ref[s:e], ids_sent=rid,
                id_got=resp.get("id"), atol=args.prob_atol,
                model_name=resp.get("model_name", "<missing>"), offset=s)
        if len(checks.failed) > before:
            return


# --- kserve -------------------------------------------------------------------------------------


def run_kserve(args, checks: Checks, images, ref):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.errors import InferenceError
    from kserve.protocol.infer_type import RequestedOutput

    who = "kserve"
    base = args.url.rstrip("/")

    def hdr():
        # Fresh per call: for binary input, infer() adds inference-header-content-length and
        # content-type: application/octet-stream to the dict it is given.
        return {"Authorization": f"Bearer {args.token}"} if args.token else {}

    async def main():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=120))
        try:
            for name in ("is_server_live", "is_server_ready"):
                try:
                    v = await getattr(client, name)(base, headers=hdr())
                    if v is True:
                        checks.ok(f"{who} {name}")
                    else:
                        checks.fail(f"{who} {name}", f"returned {v!r}: the body must be JSON "
                                                     f"{{\"{name.split('_')[-1]}\": true}}")
                except Exception as e:  # noqa: BLE001
                    checks.fail(f"{who} {name}", f"{type(e).__name__}: {e}")
            try:
                v = await client.is_model_ready(base, MODEL, headers=hdr())
                if v is True:
                    checks.ok(f"{who} is_model_ready")
                else:
                    checks.fail(f"{who} is_model_ready", f"returned {v!r}")
            except Exception as e:  # noqa: BLE001
                checks.fail(f"{who} is_model_ready", f"{type(e).__name__}: {e}")
            # InferenceRESTClient has no model-metadata call; tritonclient covers that endpoint.

            # Metadata through the client's own httpx session, to pick the input names.
            md = None
            try:
                r = await client._client.get(f"{base}/v2/models/{MODEL}", headers=hdr())
                if r.status_code == 200:
                    md = r.json()
            except Exception:  # noqa: BLE001
                pass
            names = pick_input_names(md, args.input_name)

            for dt in DATATYPES:
                for in_bin in (True, False):
                    for out_mode in ("binary", "json", "default"):
                        if out_mode == "default" and not in_bin:
                            continue
                        case = (f"{who} infer {dt} input={'binary' if in_bin else 'json'} "
                                f"outputs={out_mode}")
                        await kserve_case(args, checks, case, client, base, hdr, names[dt], dt,
                                          in_bin, out_mode, images, ref, InferInput,
                                          InferRequest, RequestedOutput, InferenceError)

            # Unknown model: httpx.HTTPStatusError whose message carries the v2 "error" string
            # (the client reads it only when Content-Type is exactly application/json).
            x = InferInput(names["UINT8"], [1, 28, 28], "UINT8")
            x.set_data_from_numpy(images[:1], binary_data=True)
            try:
                await client.infer(base, InferRequest("no-such-model", [x]),
                                   model_name="no-such-model", headers=hdr())
                checks.fail(f"{who} infer unknown model", "no error raised")
            except Exception as e:  # noqa: BLE001
                resp = getattr(e, "response", None)
                status = getattr(resp, "status_code", None)
                if status is None or not 400 <= status < 500:
                    checks.fail(f"{who} infer unknown model", f"{type(e).__name__}: {e}")
                elif str(e).startswith(", "):
                    checks.fail(f"{who} infer unknown model",
                                f"client could not read the error (Content-Type "
                                f"{resp.headers.get('content-type')!r} must be exactly "
                                f"application/json with an 'error' key): {e}")
                else:
                    checks.ok(f"{who} infer unknown model", str(e))
        finally:
            await client.close()

    asyncio.run(main())


async def kserve_case(args, checks, case, client, base, hdr, input_name, dt, in_bin, out_mode,
                      images, ref, InferInput, InferRequest, RequestedOutput, InferenceError):
    for s, e in batches(len(images), args.batch_size):
        arr = encode_inputs(images[s:e], dt)
        inp = InferInput(input_name, list(arr.shape), dt)
        if dt == "BYTES" and not in_bin:
            try:
                inp.set_data_from_numpy(arr, binary_data=False)
                checks.fail(case, "the client accepted non-UTF-8 PNG bytes for JSON")
            except InferenceError:
                checks.skip(case, "kserve refuses raw PNG bytes in JSON (not UTF-8); "
                                  "send them as binary data")
            return
        inp.set_data_from_numpy(arr, binary_data=in_bin)
        if out_mode == "default":
            outputs, params = None, None  # nothing asked: the server's default (JSON)
        else:
            b = out_mode == "binary"
            outputs = [RequestedOutput("probabilities", {"binary_data": b}),
                       RequestedOutput("prediction", {"binary_data": b})]
            params = None
        rid = f"interop-{uuid.uuid4().hex[:8]}"
        req = InferRequest(MODEL, [inp], request_id=rid, request_outputs=outputs,
                           parameters=params)
        resp_headers: dict = {}
        try:
            res = await client.infer(base, req, model_name=MODEL, headers=hdr(),
                                     response_headers=resp_headers)
        except Exception as ex:  # noqa: BLE001
            checks.fail(case, f"{type(ex).__name__}: {ex}")
            return
        try:
            po, pr = res.get_output_by_name("prediction"), res.get_output_by_name("probabilities")
            pred = None if po is None else po.as_numpy()
            probs = None if pr is None else pr.as_numpy()
        except Exception as ex:  # noqa: BLE001
            checks.fail(case, f"cannot read outputs: {type(ex).__name__}: {ex}")
            return
        # kserve drops binary_data_size from the parsed outputs' parameters (it re-encodes them
        # as JSON data), so whether binary data came is read from the response header instead.
        got_bin = any(k.lower() == "inference-header-content-length" for k in resp_headers)
        if out_mode == "binary" and not got_bin:
            checks.fail(case, "outputs were asked as binary data, but the response lacks "
                              "Inference-Header-Content-Length")
            return
        before = len(checks.failed)
        compare(checks, f"{case} [{s}:{e}]", pred, probs, ref[s:e], ids_sent=rid, id_got=res.id,
                atol=args.prob_atol, model_name=res.model_name, offset=s)
        if len(checks.failed) > before:
            return


# --- main ---------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--token", default=os.environ.get("INTEROP_TOKEN"),
                    help="bearer token (default: $INTEROP_TOKEN; none = no Authorization header)")
    ap.add_argument("--mnist-dir", required=True, help="directory with t10k-*-idx*-ubyte[.gz]")
    ap.add_argument("--count", type=int, default=100, help="MNIST test digits to use (100)")
    ap.add_argument("--batch-size", type=int, default=25, help="digits per v2 infer request (25)")
    ap.add_argument("--predict-chunk", type=int, default=25,
                    help="files per /predict request (25; the server allows 64 by default)")
    ap.add_argument("--prob-atol", type=float, default=1e-4,
                    help="largest allowed |p_v2 - p_predict| (1e-4)")
    ap.add_argument("--min-accuracy", type=float, default=0.9,
                    help="least accuracy of /predict on the digits (0.9)")
    ap.add_argument("--input-name", help="input tensor name (default: from model metadata)")
    ap.add_argument("--only", choices=("tritonclient", "kserve"), help="run one client only")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if urlsplit(args.url).scheme not in ("http", "https"):
        ap.error("--url must start with http:// or https://")

    t0 = time.monotonic()
    images, labels = load_mnist_test(args.mnist_dir, args.count)
    pngs = [png_encode_gray(im) for im in images]
    checks = Checks(args.verbose)
    base = args.url.rstrip("/")
    try:
        ref = predict_reference(base, args.token, pngs, args.predict_chunk)
    except Exception as e:  # noqa: BLE001
        checks.fail("reference /predict", f"{type(e).__name__}: {e}")
        print(f"{checks.passed} passed, {len(checks.failed)} failed")
        return 1
    acc = float(np.mean(np.array([r[0] for r in ref]) == labels))
    if acc < args.min_accuracy:
        checks.fail("reference /predict", f"accuracy {acc:.3f} below {args.min_accuracy}")
    else:
        checks.ok("reference /predict", f"{len(ref)} digits, accuracy {acc:.3f}")

    if args.only in (None, "tritonclient"):
        checks.run("tritonclient", run_tritonclient, args, checks, images, ref)
    if args.only in (None, "kserve"):
        checks.run("kserve", run_kserve, args, checks, images, ref)

    print(f"--- interop: {time.monotonic() - t0:.1f}s, {len(checks.skipped)} skipped")
    if checks.failed:
        print("interop FAILED:", file=sys.stderr)
        for f in checks.failed:
            print(f"  - {f}", file=sys.stderr)
    print(f"{checks.passed} passed, {len(checks.failed)} failed, {len(checks.skipped)} skipped")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
