"""vLLM's own OpenAI-compatible server serving the reward: ``--runner pooling`` with the plugin's architecture and
``--io-processor-plugin endokernel``, started as a subprocess as a vLLM user starts it, and ``POST /pooling``
through a real HTTP client: text and token-id pairs get the rewards of the hf engine (within 1e-5 relative,
float32), concurrent requests are all answered, and bad input gets 400 naming the field while the server keeps
serving."""

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

import cases as fx
import vllm_cases as vx

aiohttp = pytest.importorskip("aiohttp")
requests = pytest.importorskip("requests")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return vx.save_model(tmp_path_factory.mktemp("qwen3"), "qwen3", max_positions=1024)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    port = fx.free_port()
    log_path = tmp_path_factory.mktemp("log") / "vllm.log"
    overrides = json.dumps({"architectures": ["Qwen3ForEndogenousReward"]})
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--runner", "pooling",
             "--hf-overrides", overrides, "--io-processor-plugin", "endokernel", "--dtype", "float32",
             "--enforce-eager", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"vLLM's server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"vLLM's server was not ready:\n{log_path.read_text()[-4000:]}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def hf(model_dir):
    return vx.hf_scorer(model_dir)


def pooling(url, data, timeout=60):
    return requests.post(url + "/pooling", json={"data": data}, timeout=timeout)


def test_text_pairs_get_the_hf_engines_rewards(server, hf):
    prompts, responses = zip(*vx.pairs())
    answer = pooling(server, {"pairs": [{"prompt": p, "response": r} for p, r in zip(prompts, responses)],
                              "per_token": True, "gamma": 0.9, "beta": 0.3})
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    vx.assert_same_scores((_tensor(data["rewards"]), [_tensor(t) for t in data["per_token"]]),
                          hf.score(prompts, responses, gamma=0.9, beta=0.3, return_per_token=True))
    assert data["response_tokens"] == [len(ids) - start for ids, start in hf.encode(prompts, responses)]


def test_token_id_pairs_alpha_and_the_chat_template(server, hf):
    rows = hf.encode(*zip(*fx.PAIRS))
    ids = pooling(server, {"pairs": [{"prompt": ids[:start], "response": ids[start:]} for ids, start in rows],
                           "alpha": 0.7}).json()["data"]["rewards"]
    expected = hf.__class__(hf.model, hf.tokenizer, alpha=0.7).score_encoded(rows).tolist()
    assert ids == pytest.approx(expected, rel=1e-5)
    prompts, responses = zip(*fx.PAIRS[:3])
    templated = pooling(server, {"pairs": [{"prompt": p, "response": r} for p, r in zip(prompts, responses)],
                                 "chat_template": True}).json()["data"]["rewards"]
    expected = hf.__class__(hf.model, hf.tokenizer, chat_template=True).score(prompts, responses).tolist()
    assert templated == pytest.approx(expected, rel=1e-5)


def test_concurrent_requests_are_all_answered(server, hf):
    pairs = fx.sample_pairs(24, max_chars=400)

    async def all_at_once():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            async def post(prompt, response):
                body = {"data": {"pairs": [{"prompt": prompt, "response": response}]}}
                async with session.post(server + "/pooling", json=body) as answer:
                    answer.raise_for_status()
                    return (await answer.json())["data"]["rewards"][0]

            return await asyncio.gather(*(post(p, r) for p, r in pairs))

    got = asyncio.run(all_at_once())
    assert got == pytest.approx(hf.score(*zip(*pairs)).tolist(), rel=1e-5)


BAD = [  # (data, words the error message must hold)
    ({"pairs": []}, "pairs: List should have at least 1 item"),
    ({"pairs": [{"prompt": "a"}]}, "pairs.0.response: Field required"),
    ({"pairs": [{"prompt": "a", "response": [3]}]}, "both be text or both be token ids"),
    ({"pairs": [{"prompt": [1, 2], "response": [3, 10**6]}]}, "data.pairs[0]: token ids must lie in [0, "),
    ({"pairs": [{"prompt": [], "response": [3]}]}, "data.pairs[0].prompt is empty"),
    ({"pairs": [{"prompt": "a", "response": "b"}], "gamma": 1.5}, "gamma: Input should be less than or equal to 1"),
    ({"pairs": [{"prompt": "a", "response": "b"}], "alpha": 0}, "alpha: Input should be greater than 0"),
    ({"pairs": [{"prompt": "a", "response": "b"}], "per_tokens": True}, "per_tokens: Extra inputs"),
    ({"pairs": [{"prompt": "x", "response": "once upon a time " * 400}]}, "more than the model's max_model_len"),
]


@pytest.mark.parametrize("data, words", BAD, ids=[f"bad-{i}" for i in range(len(BAD))])
def test_bad_input_gets_400_naming_the_field(server, data, words):
    answer = pooling(server, data)
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"]["message"]


def test_the_server_still_serves_after_bad_input(server, hf):
    answer = pooling(server, {"pairs": [{"prompt": "Name a fruit.", "response": "A fig."}]})
    assert answer.json()["data"]["rewards"] == pytest.approx(hf.score(["Name a fruit."], ["A fig."]).tolist(),
                                                             rel=1e-5)


def _tensor(values):
    import torch

    return torch.tensor(values, dtype=torch.float32)
