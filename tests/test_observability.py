"""What an operator sees: /metrics counts each request and refusal exactly once, under bounded labels; every
refusal is one log line with its reason and never the client's body; nothing a client does is logged as an
error; the Kubernetes probes ask the paths the service answers.

One live server with two of the shipped models (the small ResNet-9-half INT8 file answers; the WRN-16-4 INT8
file is loaded and never asked) and an API key, so that every kind of refusal can be provoked.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from conftest import ROOT, running_service

USED = "resnet9-half-cifar10-int8"
IDLE = "wrn-16-4-cifar10-int8"
KEY = "observability-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_IMAGES = 4
MAX_BODY = 300_000


class Server(str):
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    shipped = ROOT / "models"
    manifest = json.loads((shipped / "manifest.json").read_text())
    entries = [entry for entry in manifest["models"] if entry["name"] in (USED, IDLE)]
    if len(entries) != 2:
        pytest.skip(f"{USED} and {IDLE} are not both in models/manifest.json")
    models = tmp_path_factory.mktemp("models")
    for entry in entries:
        shutil.copy(shipped / entry["file"], models / entry["file"])
    (models / "manifest.json").write_text(
        json.dumps({"schema_version": manifest["schema_version"], "default": USED, "models": entries})
    )
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    home = tmp_path_factory.mktemp("bentoml_home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "CIFAR_API_KEYS": KEY}
    args = ("--max-images", str(MAX_IMAGES), "--max-body-bytes", str(MAX_BODY), "--threads", "1")
    with running_service(models, log_path, *args, "--decode-threads", "1", env=env) as base:
        url = Server(base)
        url.log = log_path
        yield url


def _samples(url: str) -> dict[str, float]:
    samples = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples carrying ``labels``."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        value
        for key, value in samples.items()
        if (key == name or key.startswith(name + "{")) and all(label in key for label in wanted)
    )


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_every_model_served_has_its_series_before_its_first_request(server):
    samples = _samples(server)
    for name in ("cifar_predictions_total", "cifar_classify_requests_total", "cifar_batch_images_count"):
        assert f'{name}{{model="{IDLE}"}}' in samples, name  # a model no request has reached yet
        assert samples[f'{name}{{model="{IDLE}"}}'] == 0


def test_a_known_mix_is_counted_exactly_once(server):
    png = _png()
    pixels = _b64(bytes(32 * 32 * 3))
    crowded = b'{"images": [' + b",".join([b"[]"] * 3000) + b"]}"
    client = httpx.Client(base_url=server, timeout=60)
    sent = [  # (route label, status, reason counted or None, request)
        (
            "/classify",
            200,
            None,
            lambda: client.post("/classify", files=[("images", ("a.png", png))] * 2, headers=AUTH),
        ),
        (
            "/classify",
            200,
            None,
            lambda: client.post("/classify", json={"images": [{"data": _b64(png)}]}, headers=AUTH),
        ),
        (
            "/infer",
            200,
            None,
            lambda: client.post("/infer", json={"items": [{"model": USED, "pixels": pixels}] * 3}, headers=AUTH),
        ),
        (
            "/v2/models/{name}/infer",
            200,
            None,
            lambda: client.post(
                f"/v2/models/{USED}/infer",
                json={"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [_b64(png)]}]},
                headers=AUTH,
            ),
        ),
        (
            "/classify",
            400,
            "not_an_image",
            lambda: client.post("/classify", files=[("images", ("x.png", b"not an image"))], headers=AUTH),
        ),
        (
            "/classify",
            413,
            "body_too_large",
            lambda: client.post("/classify", files=[("images", ("x.png", b"0" * MAX_BODY))], headers=AUTH),
        ),
        (
            "/classify",
            404,
            "unknown_model",
            lambda: client.post("/classify", files=[("images", ("a.png", png))], data={"model": "x1"}, headers=AUTH),
        ),
        (
            "/v2/models/{name}/infer",
            404,
            "unknown_model",
            lambda: client.post("/v2/models/x2/infer", json={"inputs": []}, headers=AUTH),
        ),
        (
            "/infer",
            404,
            "unknown_model",
            lambda: client.post("/infer", json={"items": [{"model": "x3", "pixels": ""}]}, headers=AUTH),
        ),
        (
            "/classify",
            400,
            "bad_k",
            lambda: client.post("/classify", files=[("images", ("a.png", png))], data={"k": "99"}, headers=AUTH),
        ),
        (
            "/classify",
            400,
            "too_many_images",
            lambda: client.post("/classify", files=[("images", ("a.png", png))] * (MAX_IMAGES + 1), headers=AUTH),
        ),
        (
            "/classify",
            400,
            "too_many_images",  # too_many_values: refused before the JSON is parsed
            lambda: client.post("/classify", content=crowded, headers={**AUTH, "Content-Type": "application/json"}),
        ),
        ("(unmatched)", 404, None, lambda: client.get("/no/such/path")),
        ("/classify", 405, None, lambda: client.get("/classify")),  # a wrong method: 405, not a key asked for
        ("/classify", 401, "unauthorized", lambda: client.post("/classify", files=[("images", ("a.png", png))])),
        (
            "/classify",
            403,
            "forbidden",
            lambda: client.post(
                "/classify", files=[("images", ("a.png", png))], headers={"Authorization": "Bearer no"}
            ),
        ),
    ]
    before = _samples(server)
    for route, status, reason, request in sent:
        answer = request()
        assert answer.status_code == status, (route, reason, answer.text[:300])
        if reason is not None and not route.startswith("/v2"):
            assert answer.json()["reason"] == reason
    after = _samples(server)

    def grew(name: str, **labels: str) -> float:
        return _sum(after, name, **labels) - _sum(before, name, **labels)

    reasons = [reason for _, _, reason, _ in sent if reason is not None]
    for reason in set(reasons):
        assert grew("cifar_rejected_inputs_total", reason=reason) == reasons.count(reason), reason
    assert grew("cifar_rejected_inputs_total") == len(reasons)  # 404 and 405 are not the caller's input
    for route, status in {(route, status) for route, status, _, _ in sent}:
        expected = sum(1 for r, s, _, _ in sent if (r, s) == (route, status))
        labels = {"endpoint": route, "http_response_code": str(status)}
        assert grew("bentoml_service_request_total", **labels) == expected, labels
        assert grew("bentoml_service_request_duration_seconds_count", **labels) == expected, labels
    # images: 2 + 1 multipart and JSON /classify, 3 /infer, 1 /v2; requests answered by /classify: 2
    assert grew("cifar_predictions_total", model=USED) == 7
    assert grew("cifar_classify_requests_total", model=USED) == 2
    assert grew("cifar_batch_images_sum", model=USED) == 7
    # one model per batch here, so BentoML's batches are this service's
    assert grew("cifar_batch_images_count", model=USED) == grew("bentoml_service_adaptive_batch_size_count") == 4
    assert grew("cifar_predictions_total", model=IDLE) == 0


def test_what_a_client_sends_never_becomes_a_label(server):
    client = httpx.Client(base_url=server, timeout=30)
    made_up = [uuid.uuid4().hex for _ in range(3)]
    for name in made_up:
        assert client.get(f"/{name}").status_code == 404
        assert client.get(f"/static/{name}").status_code == 404
        assert client.get(f"/v2/models/{name}").status_code == 404
        assert client.get(f"/v2/models/{name}/a/b").status_code == 404
        assert client.post(f"/v2/models/{name}/infer", json={"inputs": []}, headers=AUTH).status_code == 404
        answer = client.post("/classify", files=[("images", ("a.png", _png()))], data={"model": name}, headers=AUTH)
        assert answer.status_code == 404
    text = httpx.get(f"{server}/metrics", timeout=10).text
    assert not any(name in text for name in made_up)
    endpoints = set(re.findall(r'endpoint="([^"]*)"', text))
    assert endpoints <= {
        "(unmatched)",
        "/classify",
        "/infer",
        "/models",
        "/livez",
        "/readyz",
        "/static",
        "/v2/models/{name}",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/ready",
        "/v2/models/{rest:path}",
    }, endpoints
    assert set(re.findall(r'cifar_\w+\{model="([^"]*)"', text)) == {USED, IDLE}


def test_a_refusal_is_one_log_line_with_its_reason_never_the_body_nor_an_error(server):
    marker = uuid.uuid4().hex
    start = len(server.log.read_text())
    client = httpx.Client(base_url=server, timeout=30)
    body = f"not an image {marker}".encode()
    assert client.post("/classify", files=[("images", ("x.png", body))], headers=AUTH).status_code == 400
    assert (
        client.post("/infer", json={"items": [{"model": USED, "pixels": _b64(body)}]}, headers=AUTH).status_code == 400
    )
    assert client.post(f"/v2/models/{USED}/infer", content=body, headers=AUTH).status_code == 400
    assert client.post("/classify", files=[("images", ("x.png", body))]).status_code == 401
    assert client.get("/x%0Aforged line").status_code == 404
    assert client.get("/readyz").status_code == 200
    log = server.log.read_text()[start:]
    lines = log.splitlines()
    refused = [line for line in lines if "refused " in line]
    assert len(refused) == 5, log
    assert any("refused POST /classify: 400 not_an_image: images[0] ('x.png')" in line for line in refused), log
    assert any("refused POST /infer: 400 bad_tensor" in line for line in refused), log
    assert any(f"refused POST /v2/models/{USED}/infer: 400 malformed_request" in line for line in refused), log
    assert any("refused POST /classify: 401 unauthorized" in line for line in refused), log
    assert any(r"refused GET /x\x0aforged line: 404 no_such_path" in line for line in refused), log
    assert not any(line.startswith("forged line") for line in lines)  # a path cannot start a log line
    assert marker not in log and KEY not in log
    assert not re.search(r"\[(WARNING|ERROR|CRITICAL)\]|Traceback", log), log
    assert all("[INFO]" in line for line in refused)


def test_the_kubernetes_probes_ask_what_the_service_answers(server):
    deployment = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    assert port == 3000
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        spec = container[probe]
        assert spec["httpGet"]["port"] == "http"
        assert httpx.get(f"{server}{spec['httpGet']['path']}", timeout=5).status_code == 200, probe
    for probe in ("livenessProbe", "readinessProbe"):  # a worker busy with batches answers, if not in 1 s
        assert container[probe].get("timeoutSeconds", 1) >= 5, probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # loading and warming every model
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 60  # CIFAR_TIMEOUT_S
