"""``endokernel serve`` end to end: real uvicorn servers started as subprocesses on free loopback ports with a tiny
random-weight model saved by ``save_pretrained``, and real HTTP clients (aiohttp, as OpenRLHF and slime use it,
and requests) posting the trainers' own payloads. Rewards equal ``EndogenousRewardModel`` in this process;
64 concurrent one-sample requests are batched and all answered; every bad input gets its status and a message
naming the field; the body and queue limits; a client aborting; the API key; SIGTERM under load.

Every server test runs once per engine: ``--engine hf`` (the server's batcher) and ``--engine vllm`` (a vLLM
engine batching the requests itself; skipped where vLLM is not installed, run by .ci/vllm with ``-k vllm``).

Two servers start together: ``open_server`` (batching on, no key) and ``slow_server`` (the API key from the
environment, one pair per forward, a queue a little larger than a "blocker" request: 80 pairs of ~480 tokens,
about a second of work, behind which other requests are observably pending), stopped last by SIGTERM."""

import asyncio
import importlib.util
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

aiohttp = pytest.importorskip("aiohttp")
requests = pytest.importorskip("requests")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from endokernel import EndogenousRewardModel  # noqa: E402
from endokernel.hf.conversation import encode_pairs  # noqa: E402

import cases as fx  # noqa: E402

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "serving.md"
MAX_POSITIONS = 512
LONG = "once upon a time " * 400  # over the model's 512 positions
KEY = "k3y-for-tests"
MARKER = "zebra-marker-7"  # sent in requests; must never reach the server's log
MAX_BODY = 65536
QUEUE_TOKENS = 40000
BLOCKER_PAIRS = 80
TIMEOUT = aiohttp.ClientTimeout(total=60)
HIDDEN = 128  # heads of 32: the smallest vLLM's CPU attention takes
ENGINES = ["hf", pytest.param("vllm", marks=pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                                               reason="vLLM is not installed (.ci/vllm)"))]
# per engine: its options, and its environment (vLLM: the engine core in the server's process, a small KV cache)
ENGINE_OPTIONS = {"hf": ["--device", "cpu", "--threads", "1"], "vllm": ["--engine", "vllm", "--enforce-eager"]}
ENGINE_ENV = {"hf": {}, "vllm": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}}


class Server:
    """``endokernel serve`` in a subprocess, its output in a log file."""

    def __init__(self, model_dir, log_path, engine, *options, env=None):
        self.port, self.log_path, self.engine = fx.free_port(), log_path, engine
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "endokernel.cli", "serve", "--model", model_dir, "--dtype", "float32",
                 "--port", str(self.port), *ENGINE_OPTIONS[engine], *options],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ENGINE_ENV[engine], **(env or {})})

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        pytest.fail(f"the server was not ready after {timeout} s:\n{self.log()}")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tokenizer = fx.make_chat_tokenizer()
    fx.make_model("qwen3", len(tokenizer), max_positions=MAX_POSITIONS, hidden=HIDDEN).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module", params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture(scope="module")
def servers(saved_model, engine, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    # the slow server scores one ~480-token pair per forward (hf), or takes 512 tokens per engine step (vllm)
    step = ["--max-batch-tokens", "512"] if engine == "hf" else ["--engine-option", "max_num_batched_tokens=512"]
    started = {
        "open": Server(saved_model, logs / "open.log", engine, "--max-wait-ms", "50", "--max-body-bytes",
                       str(MAX_BODY)),
        "slow": Server(saved_model, logs / "slow.log", engine, *step, "--max-queue-tokens", str(QUEUE_TOKENS),
                       env={"ENDOKERNEL_API_KEY": KEY}),
    }
    try:
        for server in started.values():  # both load at once
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def open_server(servers):
    return servers["open"]


@pytest.fixture(scope="module")
def slow_server(servers):
    return servers["slow"]


@pytest.fixture(scope="module")
def plain(saved_model):
    return EndogenousRewardModel.from_pretrained(saved_model, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def templated(plain):
    """The same model, formatting prompts with the chat template (text then tokenized without special tokens)."""
    return EndogenousRewardModel(plain.model, plain.tokenizer, chat_template=True)


def rendered(tokenizer, prompt: str) -> str:
    """The prompt as OpenRLHF's dataset renders it: the chat template with its generation prompt."""
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def reward_of(model, prompt, response) -> float:
    return float(model.score([prompt], [response])[0])


def metric(server, name: str, labels: str = "") -> float:
    """A metric's value from /metrics (0 where it has no sample yet)."""
    text = requests.get(server.url + "/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, flags=re.M)
    return float(found.group(1)) if found else 0.0


async def openrlhf_post(url, query, prompt, label=None, auth_url=None):
    """What OpenRLHF (>= 0.9) sends for one sample: a fresh session, a 180 s timeout, one-element lists."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as session:
        async with session.post((auth_url or url) + "/get_reward",
                                json={"query": [query], "prompts": [prompt], "labels": [label]}) as response:
            response.raise_for_status()
            return await response.json()


# --- rewards equal the in-process class


def test_health_and_warm_up(open_server):
    assert requests.get(open_server.url + "/health", timeout=10).json() == {"status": "ready"}
    assert metric(open_server, "endokernel_serve_ready") == 1.0
    assert metric(open_server, "endokernel_serve_batch_pairs_count") >= 1  # the warm-up batch ran


def test_openrlhf_rendered_queries_get_no_second_bos(open_server, templated):
    """A query holds the template's special tokens: scored as the class scores the raw prompt with the chat
    template. With a second BOS the rewards would differ."""
    tokenizer = templated.tokenizer
    pairs = [(p, r) for p, r in fx.PAIRS]
    for prompt, response in pairs:
        head = rendered(tokenizer, prompt)
        assert head.startswith(tokenizer.bos_token)
        answer = asyncio.run(openrlhf_post(open_server.url, head + response + "</s>", head))
        expected = reward_of(templated, prompt, response + "</s>")
        assert answer["rewards"] == pytest.approx([expected], rel=1e-5)
        assert answer["scores"] == answer["rewards"]
        ids, start = templated.encode([prompt], [response + "</s>"])[0]
        assert ids.count(tokenizer.bos_token_id) == 1
        assert answer["extra_logs"] == {"response_tokens": [len(ids) - start]}


def test_openrlhf_plain_queries_get_their_bos(open_server, plain):
    """Text without the template's tokens is tokenized as ``EndogenousRewardModel.score`` does (BOS added)."""
    prompts = [p for p, _ in fx.PAIRS]
    responses = [r for _, r in fx.PAIRS]
    answer = requests.post(open_server.url + "/get_reward", timeout=60, json={
        "query": [p + r for p, r in zip(prompts, responses)], "prompts": prompts,
        "labels": [None] * len(prompts)}).json()
    assert answer["rewards"] == pytest.approx(plain.score(prompts, responses).tolist(), rel=1e-5)
    assert 0.0 in answer["rewards"]  # the empty response


def test_openrlhf_empty_lists_are_answered(open_server):
    """OpenRLHF given several server URLs sends one-sample requests to the first and empty ones to the rest."""
    answer = requests.post(open_server.url + "/get_reward", json={"query": [], "prompts": [], "labels": []},
                           timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"rewards": [], "scores": [], "extra_logs": {"response_tokens": []}}


def test_64_concurrent_one_sample_requests_are_batched_and_equal(open_server, templated):
    pairs = fx.sample_pairs(64, max_chars=400)
    tokenizer = templated.tokenizer
    batches_before = metric(open_server, "endokernel_serve_batch_pairs_count")

    async def all_at_once():
        return await asyncio.gather(*(openrlhf_post(open_server.url, rendered(tokenizer, p) + r,
                                                    rendered(tokenizer, p)) for p, r in pairs))

    answers = asyncio.run(asyncio.wait_for(all_at_once(), 120))
    expected = [reward_of(templated, p, r) for p, r in pairs]  # each pair alone
    assert [a["rewards"][0] for a in answers] == pytest.approx(expected, rel=1e-5)
    batches = metric(open_server, "endokernel_serve_batch_pairs_count") - batches_before
    if open_server.engine == "hf":
        assert 1 <= batches < len(pairs)  # pairs of different requests shared forwards
    else:
        assert batches == len(pairs)  # each request handed to the engine at once (vLLM batches them)
    assert metric(open_server, "endokernel_serve_queue_tokens") == 0


def test_slime_payloads(open_server, templated):
    """slime posts {"prompt", "response", "label"}, the prompt as templated text or as messages."""
    tokenizer = templated.tokenizer
    messages = [{"role": "user", "content": "Name a fruit."}]
    conversation = encode_pairs(templated, [messages], ["An apple."])

    async def post(payload):
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.post(open_server.url + "/reward", json=payload) as response:
                response.raise_for_status()
                return await response.json()

    text = asyncio.run(post({"prompt": rendered(tokenizer, "Name a fruit."), "response": "An apple.", "label": "x"}))
    chat = asyncio.run(post({"prompt": messages, "response": "An apple.", "label": None}))
    assert text["reward"] == pytest.approx(reward_of(templated, "Name a fruit.", "An apple."), rel=1e-5)
    assert chat["reward"] == pytest.approx(float(templated.score_encoded(conversation)[0]), rel=1e-5)


def test_native_score_in_order_with_per_token_rewards(open_server, plain):
    pairs = [{"prompt": p, "response": r} for p, r in fx.PAIRS]
    pairs.insert(2, {"prompt": [{"role": "user", "content": "Name a fruit."}],
                     "response": [{"role": "assistant", "content": "A pear."}]})
    answer = requests.post(open_server.url + "/score", json={"pairs": pairs, "per_token": True}, timeout=60).json()
    rows = encode_pairs(plain, [p["prompt"] for p in pairs], [p["response"] for p in pairs])
    rewards, per_token = plain.score_encoded(rows, return_per_token=True)
    assert answer["rewards"] == pytest.approx(rewards.tolist(), rel=1e-5)
    assert len(answer["per_token"]) == len(pairs)
    for got, want in zip(answer["per_token"], per_token):
        assert got == pytest.approx(want.tolist(), rel=1e-5, abs=1e-5)
    assert [] in answer["per_token"]  # the empty response
    without = requests.post(open_server.url + "/score", json={"pairs": pairs}, timeout=60).json()
    assert set(without) == {"rewards"}


def test_the_docs_reward_functions_for_trl_and_verl(open_server, plain):
    """The TRL and verl functions of docs/serving.md, pointed at the test server."""
    blocks = re.findall(r"^```python\n(.*?)^```", DOCS.read_text(), flags=re.S | re.M)
    functions = {}
    for block in blocks:
        namespace = {}
        exec(compile(block, str(DOCS), "exec"), namespace)
        namespace["REWARD_URL"] = open_server.url
        functions.update((name, namespace[name]) for name in ("endogenous_reward", "compute_score")
                         if name in namespace)
    assert set(functions) == {"endogenous_reward", "compute_score"}
    messages = [{"role": "user", "content": "Name a fruit."}]
    conversational = asyncio.run(functions["endogenous_reward"](
        prompts=[messages, messages], completions=[[{"role": "assistant", "content": "A plum."}],
                                                   [{"role": "assistant", "content": "A rock."}]]))
    text = asyncio.run(functions["endogenous_reward"](prompts=["Name a fruit."], completions=["A plum."]))
    verl = asyncio.run(functions["compute_score"](data_source="fruit", solution_str="A plum.", ground_truth=None,
                                                  extra_info={"prompt": messages}))
    rows = encode_pairs(plain, [messages, messages, messages],
                        [[{"role": "assistant", "content": "A plum."}], [{"role": "assistant", "content": "A rock."}],
                         "A plum."])
    expected = plain.score_encoded(rows).tolist()
    assert conversational + [verl] == pytest.approx(expected, rel=1e-5)
    assert text == pytest.approx([reward_of(plain, "Name a fruit.", "A plum.")], rel=1e-5)


# --- bad input

BAD = [  # (endpoint, body, status, words the message must hold)
    ("/get_reward", {"query": ["a"], "prompts": ["a", "b"]}, 400, "query 1, prompts 2"),
    ("/get_reward", {"query": ["a"], "prompts": ["a"], "labels": [1, 2]}, 400, "labels 2"),
    ("/get_reward", {"prompts": ["a"]}, 422, "query: Field required"),
    ("/get_reward", {"query": "a", "prompts": ["a"]}, 422, "query: Input should be a valid list"),
    ("/get_reward", {"query": ["a", 3], "prompts": ["a", "b"]}, 422, "query[1]: Input should be a valid string"),
    ("/get_reward", {"query": [MARKER, "bye"], "prompts": [MARKER, "hi"]}, 400,
     "query[1] does not start with prompts[1]"),
    ("/get_reward", {"query": ["tell " + LONG], "prompts": ["tell "]}, 400, "query[0]: "),
    ("/reward", {"prompt": "a"}, 422, "response: Field required"),
    ("/reward", {"prompt": 5, "response": "b"}, 422, "prompt: must be a string or a list of chat messages"),
    ("/reward", {"prompt": [{"content": MARKER}], "response": "b"}, 422, "prompt.messages[0].role: Field required"),
    ("/reward", {"prompt": "x" + LONG, "response": "b"}, 400, "prompt + response: "),
    ("/score", {"pairs": []}, 422, "pairs: List should have at least 1 item"),
    ("/score", {"pairs": [{"prompt": "a"}]}, 422, "pairs[0].response: Field required"),
    ("/score", {"pairs": [{"prompt": "a", "response": "b"}], "per_token": "yes"}, 422, "per_token"),
    ("/score", {"pairs": [{"prompt": "a", "response": "b"}], "per_tokens": True}, 422,
     "per_tokens: Extra inputs are not permitted"),
    ("/score", {"pairs": [{"prompt": "a", "response": [{"role": "assistant", "content": "b"}]}]}, 400,
     "pairs[0].response is a list of messages, but pairs[0].prompt is plain text"),
    ("/score", {"pairs": [{"prompt": "ok", "response": "b"}, {"prompt": "x", "response": LONG}]}, 400, "pairs[1]: "),
    ("/score", [1, 2], 422, "body: Input should be a valid dictionary"),
]


@pytest.mark.parametrize("endpoint, body, status, words", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_refused_naming_the_field(open_server, endpoint, body, status, words):
    answer = requests.post(open_server.url + endpoint, json=body, timeout=30)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert words in detail
    if words.endswith(": ") and status == 400:
        assert "more than the model's 512 positions" in detail
    assert MARKER not in detail and "once upon" not in detail  # the message names the field, not the text


def test_malformed_json_and_an_oversized_body(open_server):
    answer = requests.post(open_server.url + "/get_reward", data=b'{"query": [', timeout=30,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "malformed JSON" in answer.json()["detail"]
    big = json.dumps({"pairs": [{"prompt": "a", "response": "b" * MAX_BODY}]})
    assert requests.post(open_server.url + "/score", data=big, timeout=30,
                         headers={"Content-Type": "application/json"}).status_code == 413


def test_an_oversized_body_is_refused_unread(open_server):
    """A declared 1 GB body gets 413 after the headers and a few bytes: the server does not wait for the rest."""
    with socket.create_connection(("127.0.0.1", open_server.port), timeout=10) as sock:
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000000\r\n\r\n" + b'{"pairs": [' * 10)
        assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")


def test_the_log_holds_no_request_text(open_server):
    requests.post(open_server.url + "/score", json={"pairs": [{"prompt": MARKER, "response": MARKER}]}, timeout=30)
    assert "ready:" in open_server.log()
    assert MARKER not in open_server.log()


def test_metrics(open_server):
    text = requests.get(open_server.url + "/metrics", timeout=10).text
    for name in ('endokernel_serve_requests_total{code="200",endpoint="/get_reward"}',
                 'endokernel_serve_requests_total{code="400",endpoint="/get_reward"}',
                 'endokernel_serve_requests_total{code="422",endpoint="/score"}',
                 'endokernel_serve_requests_total{code="413",endpoint="/score"}',
                 'endokernel_serve_request_seconds_bucket{endpoint="/reward",le="+Inf"}',
                 "endokernel_serve_batch_pairs_bucket", "endokernel_serve_batch_tokens_sum",
                 "endokernel_serve_batch_seconds_count", "endokernel_serve_queue_pairs",
                 "endokernel_serve_queue_tokens", "endokernel_serve_requests_in_flight"):
        assert name in text, name


# --- the API key, load limits, aborting clients and SIGTERM, on the slow server


def test_api_key(slow_server, plain):
    """From ENDOKERNEL_API_KEY; a Bearer token, X-API-Key, or the password of the URL (OpenRLHF and slime send
    no headers of their own: aiohttp turns http://user:KEY@host into basic auth)."""
    url, body = slow_server.url, {"pairs": [{"prompt": "Name a fruit.", "response": "A plum."}]}
    for endpoint in ("/score", "/reward", "/get_reward"):
        assert requests.post(url + endpoint, json=body, timeout=30).status_code == 401
    assert requests.post(url + "/score", json=body, headers={"Authorization": "Bearer nope"},
                         timeout=30).status_code == 401
    assert requests.post(url + "/score", data=b"{not json", headers={"Content-Type": "application/json"},
                         timeout=30).status_code == 401  # refused before the body is read
    for endpoint in ("/health", "/metrics"):
        assert requests.get(url + endpoint, timeout=30).status_code == 200

    async def authorized():
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async def post(headers=None, base=url):
                async with session.post(base + "/score", json=body, headers=headers) as response:
                    response.raise_for_status()
                    return (await response.json())["rewards"][0]

            in_url = url.replace("http://", f"http://trainer:{KEY}@")
            return await asyncio.gather(post({"Authorization": f"Bearer {KEY}"}), post({"X-API-Key": KEY}),
                                        post(base=in_url),
                                        openrlhf_post(url, "Name a fruit.A plum.", "Name a fruit.", auth_url=in_url))

    *scores, openrlhf = asyncio.run(authorized())
    expected = reward_of(plain, "Name a fruit.", "A plum.")
    assert scores + openrlhf["rewards"] == pytest.approx([expected] * 4, rel=1e-5)


def headers():
    return {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def blocker(plain):
    """/score's body of BLOCKER_PAIRS pairs of ~480 tokens, and its token count (under QUEUE_TOKENS)."""
    words = plain.tokenizer(LONG, add_special_tokens=False).input_ids
    pair = {"prompt": "Tell me a story.", "response": plain.tokenizer.decode(words[:470])}
    tokens = len(plain.encode([pair["prompt"]], [pair["response"]])[0][0])
    assert 450 < tokens <= 512 and BLOCKER_PAIRS * tokens < QUEUE_TOKENS
    return {"pairs": [pair] * BLOCKER_PAIRS}, BLOCKER_PAIRS * tokens


async def until(condition, seconds=10.0):
    """Poll ``condition()`` (a blocking /metrics read) until it holds, at most ``seconds``."""
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def test_pending_work_over_the_queue_limit_gets_503(slow_server, blocker):
    """Behind the blocker, a request that would pass --max-queue-tokens is refused at once with Retry-After; a
    request larger than the whole queue gets 413; the blocker is answered."""
    body, tokens = blocker
    # ~14400 tokens: over the queue's room while fewer than ~25 of the blocker's pairs (one per forward) are done
    second = {"pairs": body["pairs"][:30]}

    async def behind_the_blocker():
        async with aiohttp.ClientSession(timeout=TIMEOUT, headers=headers()) as session:
            first = asyncio.ensure_future(session.post(slow_server.url + "/score", json=body))
            await until(lambda: metric(slow_server, "endokernel_serve_queue_tokens") >= tokens - 2000)
            async with session.post(slow_server.url + "/score", json=second) as answer:
                refused = answer.status, answer.headers.get("Retry-After"), (await answer.json()).get("detail")
            async with session.post(slow_server.url + "/score", json={"pairs": body["pairs"] * 2}) as third:
                too_large = third.status, (await third.json())["detail"]
            async with await first as response:
                return refused, too_large, response.status, await response.json()

    (status, retry, detail), too_large, first_status, first = asyncio.run(behind_the_blocker())
    assert (status, retry) == (503, "1") and f"--max-queue-tokens {QUEUE_TOKENS}" in detail
    assert too_large[0] == 413 and f"more than the server's --max-queue-tokens {QUEUE_TOKENS}" in too_large[1]
    assert first_status == 200 and len(first["rewards"]) == BLOCKER_PAIRS
    assert metric(slow_server, "endokernel_serve_requests_total", '{code="503",endpoint="/score"}') >= 1


def test_a_client_that_disconnects_does_not_break_the_batch(slow_server, plain, blocker):
    """Behind the blocker, one client sends its request and goes away while its pair waits; another sends half
    a body and goes away. The request queued with them is answered, and nothing is left pending."""
    body = json.dumps({"pairs": [{"prompt": "Name a fruit.", "response": "A fig."}]}).encode()
    head = (f"POST /score HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()

    async def run():
        async with aiohttp.ClientSession(timeout=TIMEOUT, headers=headers()) as session:
            busy = asyncio.ensure_future(session.post(slow_server.url + "/score", json=blocker[0]))
            await until(lambda: metric(slow_server, "endokernel_serve_queue_tokens") > 0)
            gone = socket.create_connection(("127.0.0.1", slow_server.port), timeout=10)
            gone.sendall(head + body)
            half = socket.create_connection(("127.0.0.1", slow_server.port), timeout=10)
            half.sendall(head + body[: len(body) // 2])
            kept = asyncio.ensure_future(session.post(slow_server.url + "/score", json={"pairs": [
                {"prompt": "Name a fruit.", "response": "A kiwi."}]}))
            await until(lambda: metric(slow_server, "endokernel_serve_requests_in_flight") >= 5)  # + this read
            gone.close()
            half.close()
            async with await kept as response, await busy as blocked:
                return response.status, await response.json(), blocked.status

    status, answer, blocked = asyncio.run(run())
    assert status == blocked == 200
    assert answer["rewards"] == pytest.approx([reward_of(plain, "Name a fruit.", "A kiwi.")], rel=1e-5)
    for _ in range(100):
        if metric(slow_server, "endokernel_serve_queue_tokens") == 0:
            break
        time.sleep(0.1)
    assert metric(slow_server, "endokernel_serve_queue_tokens") == 0
    assert requests.get(slow_server.url + "/health", timeout=10).status_code == 200


def test_sigterm_answers_every_accepted_request_then_exits(slow_server, plain, blocker):
    """Behind the blocker, eight requests wait when SIGTERM comes: new connections are refused at once, every
    accepted request is answered, then the process exits with status 0. (Stops the slow server.)"""
    responses = [f"Fruit number {i}." for i in range(8)]

    async def under_load():
        async with aiohttp.ClientSession(timeout=TIMEOUT, headers=headers()) as session:
            async def post(response):
                async with session.post(slow_server.url + "/reward",
                                        json={"prompt": "Name a fruit.", "response": response}) as answer:
                    return answer.status, await answer.json()

            busy = asyncio.ensure_future(session.post(slow_server.url + "/score", json=blocker[0]))
            await until(lambda: metric(slow_server, "endokernel_serve_queue_tokens") > 0)
            accepted = [asyncio.ensure_future(post(r)) for r in responses]
            await until(lambda: metric(slow_server, "endokernel_serve_requests_in_flight") >= len(responses) + 2)
            slow_server.process.send_signal(signal.SIGTERM)
            refused = False
            for _ in range(50):  # the listening socket closes within uvicorn's 0.1 s tick
                await asyncio.sleep(0.05)
                try:
                    socket.create_connection(("127.0.0.1", slow_server.port), timeout=1).close()
                except ConnectionRefusedError:
                    refused = True
                    break
            async with await busy as blocked:
                blocked_status = blocked.status
            return refused, blocked_status, await asyncio.gather(*accepted)

    refused, blocked, answers = asyncio.run(under_load())
    assert refused
    assert blocked == 200
    assert [status for status, _ in answers] == [200] * len(responses)
    expected = [reward_of(plain, "Name a fruit.", r) for r in responses]
    assert [a["reward"] for _, a in answers] == pytest.approx(expected, rel=1e-5)
    assert slow_server.process.wait(30) == 0
    assert "Shutting down" in slow_server.log() and "Finished server process" in slow_server.log()


# --- the command line


@pytest.mark.parametrize("argv, message", [
    (["--max-batch-tokens", "0"], "max_batch_tokens must be a positive int"),
    (["--max-batch-tokens", "4096", "--max-queue-tokens", "100"], "must be at least max_batch_tokens"),
    (["--gamma", "1.5"], "gamma must lie in (0, 1]"),
    (["--api-key", ""], "api_key must not be empty"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--engine", "vllm", "--no-batching"], "the vllm engine batches requests itself"),
    (["--tensor-parallel-size", "0"], "tensor_parallel_size must be a positive int"),
])
def test_bad_options_fail_before_loading(argv, message, tmp_path):
    from endokernel.cli import main

    with pytest.raises(SystemExit, match=re.escape(message)):
        main(["serve", "--model", str(tmp_path), *argv])


def test_a_missing_model_fails_cleanly(tmp_path):
    from endokernel.cli import main

    with pytest.raises(SystemExit, match="cannot load"):
        main(["serve", "--model", str(tmp_path / "missing"), "--device", "cpu"])


@pytest.mark.parametrize("argv, message", [
    (["--engine", "vllm", "--device", "cpu"], "device is an option of the hf engine"),
    (["--tensor-parallel-size", "2"], "tensor_parallel_size is an option of the vllm engine"),
    (["--engine-option", "block_size=32"], "engine_options is an option of the vllm engine"),
])
def test_options_of_the_other_engine_fail_cleanly(argv, message, saved_model):
    from endokernel.cli import main

    with pytest.raises(SystemExit, match=f"cannot load .*{message}"):
        main(["serve", "--model", saved_model, *argv])
