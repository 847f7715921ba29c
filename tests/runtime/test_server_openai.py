"""examples/server.py with OpenAI bodies (examples/openai_client.py) and the opt-in fetcher, over real HTTP."""

from __future__ import annotations

import http.server
import importlib.util
import pathlib
import threading

import httpx
import numpy as np
import pytest
import skimage

from serving import uvicorn_serving
from vlfront.runtime import Runtime
from vlfront.runtime.fetch import Fetcher, FetchPolicy

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
DATA = pathlib.Path(skimage.__file__).parent / "data"
ROCKET = (DATA / "rocket.jpg").read_bytes()


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"vlfront_example_{name}_i12", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


server_mod = load_example("server")
client_mod = load_example("openai_client")


class Images(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/rocket.jpg":
            self.send_response(200)
            self.send_header("Content-Length", str(len(ROCKET)))
            self.end_headers()
            self.wfile.write(ROCKET)
        elif self.path == "/elsewhere":
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/rocket.jpg")
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()


@pytest.fixture(scope="module")
def images():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def servers(tiny_bundle):
    """Two apps: the default (no fetcher) and one whose fetcher allows the loopback image server."""
    plain = server_mod.create_app(tiny_bundle)
    fetching = server_mod.create_app(tiny_bundle)
    fetching.state.fetcher = Fetcher(FetchPolicy(("127.0.0.1", "localhost"), allow_http=True, allow_networks=("127.0.0.1/32",),
                                                 timeout_s=2.0, deadline_s=5.0))
    with uvicorn_serving(plain) as (plain_url, _, _), uvicorn_serving(fetching) as (fetching_url, _, _):
        yield plain_url, fetching_url


@pytest.fixture(scope="module")
def rt(tiny_bundle):
    with Runtime.load(tiny_bundle) as runtime:
        yield runtime


def expected(rt, text="What is this?"):
    return rt.embed([[{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": [{"type": "image", "image": ROCKET},
                                                   {"type": "text", "text": text}]}]]).inputs_embeds


def test_openai_client_example_body(servers, rt):
    plain, _ = servers
    embeds, headers = client_mod.embed(plain, client_mod.chat_body(ROCKET, "image/jpeg", "What is this?"))
    np.testing.assert_array_equal(embeds, expected(rt))
    assert headers["X-Num-Images"] == "1"


def test_remote_url_refused_without_a_fetcher(servers, images):
    plain, _ = servers
    body = client_mod.chat_body(ROCKET, "image/jpeg", "What is this?")
    body["messages"][1]["content"][0]["image_url"]["url"] = f"{images}/rocket.jpg"
    r = httpx.post(plain + "/v1/embed", json=body, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"] == ("message 1, item 0: remote http: URLs are not fetched here; send the image as a "
                                 "data: URL (data:image/png;base64,...), or let a server with a fetcher download "
                                 "it (docs/openai.md)")


def test_fetching_server_downloads_allowed_urls(servers, images, rt):
    _, fetching = servers
    body = client_mod.chat_body(ROCKET, "image/jpeg", "What is this?")
    body["messages"][1]["content"][0] = {"type": "image_url", "image_url": f"{images}/rocket.jpg"}
    embeds, _ = client_mod.embed(fetching, body)
    np.testing.assert_array_equal(embeds, expected(rt))


@pytest.mark.parametrize("path, why", [("/elsewhere", "redirected to another host"), ("/nothing", "HTTP 404")])
def test_fetching_server_refusals(servers, images, path, why):
    _, fetching = servers
    body = client_mod.chat_body(ROCKET, "image/jpeg", "x")
    body["messages"][1]["content"][0]["image_url"]["url"] = f"{images}{path}"
    r = httpx.post(fetching + "/v1/embed", json=body, timeout=30)
    assert r.status_code == 400 and why in r.json()["error"] and r.json()["error"].startswith("message 1, item 0: ")


def test_fetching_server_caps_remote_urls_per_request(servers, images):
    _, fetching = servers
    body = client_mod.chat_body(ROCKET, "image/jpeg", "x")
    body["messages"][1]["content"] = [{"type": "image_url", "image_url": f"{images}/rocket.jpg"}] * 6
    r = httpx.post(fetching + "/v1/embed", json=body, timeout=30)
    assert r.status_code == 400 and "6 remote image URLs, over the limit of 5" in r.json()["error"]


@pytest.mark.parametrize("edit, why", [
    (lambda b: b.update(n=2), "'n' is refused"),
    (lambda b: b.update(tools=[{"type": "function"}]), "'tools' is refused"),
    (lambda b: b["messages"][1]["content"][0]["image_url"].update(detail="high"), "'detail' is refused"),
    (lambda b: b["messages"][1]["content"][0]["image_url"].update(url="file:///etc/passwd"), "file: URLs are never"),
    (lambda b: b["messages"][1]["content"][0]["image_url"].update(url="data:image/png;base64,@@"), "not valid base64"),
])
def test_openai_refusals_over_http(servers, edit, why):
    plain, _ = servers
    body = client_mod.chat_body(ROCKET, "image/jpeg", "x")
    edit(body)
    r = httpx.post(plain + "/v1/embed", json=body, timeout=30)
    assert r.status_code == 400 and why in r.json()["error"], r.text
