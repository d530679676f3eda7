"""``endokernel.serve.ray_serve`` on a local Ray instance on the CPU: two replicas of the reward server behind Ray
Serve's proxy, built by ``app_builder`` from ``serve run``-style string arguments, answer concurrent OpenRLHF
requests with the rewards of ``EndogenousRewardModel``. Ray runs in a subprocess (its workers and its shutdown
stay out of the test process); about 30-50 s on two cores, most of it Ray starting and the replicas importing
torch and transformers."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("aiohttp")

from endokernel import EndogenousRewardModel  # noqa: E402
from endokernel.serve.ray_serve import app_builder  # noqa: E402

import cases as fx  # noqa: E402

SCRIPT = r"""
import asyncio, json, sys
import aiohttp, ray
from ray import serve
from endokernel.serve.ray_serve import app_builder

model, port, pairs = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
try:
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app_builder({"model": model, "dtype": "float32", "device": "cpu", "num_replicas": "2",
                           "max_wait_ms": "20"}))
    states = serve.status().applications["default"].deployments["endokernel"].replica_states

    async def post(prompt, response):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            async with session.post(f"http://127.0.0.1:{port}/get_reward",
                                    json={"query": [prompt + response], "prompts": [prompt], "labels": [None]}) as r:
                r.raise_for_status()
                return (await r.json())["rewards"][0]

    async def main():
        return await asyncio.gather(*(post(p, r) for p, r in pairs))

    replicas = {str(state): count for state, count in states.items()}
    print("RESULT", json.dumps({"replicas": replicas, "rewards": asyncio.run(main())}), flush=True)
finally:
    serve.shutdown()
    ray.shutdown()
"""


def test_app_builder_rejects_unknown_arguments():
    with pytest.raises(ValueError, match="unknown arguments"):
        app_builder({"model": "m", "max_batch_token": "1"})
    with pytest.raises(ValueError, match="chat_template must be true or false"):
        app_builder({"model": "m", "chat_template": "yes please"})


def test_two_replicas_on_a_local_ray_instance(tmp_path):
    tokenizer = fx.make_tokenizer()
    fx.make_model("llama", len(tokenizer), max_positions=512).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    pairs = fx.PAIRS * 2
    port = fx.free_port()
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(port), json.dumps(pairs)],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    (line,) = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert "RUNNING" in str(result["replicas"]) and "2" in str(result["replicas"])
    model = EndogenousRewardModel.from_pretrained(str(tmp_path), dtype="float32", device="cpu")
    expected = model.score([p for p, _ in pairs], [r for _, r in pairs]).tolist()
    assert result["rewards"] == pytest.approx(expected, rel=1e-5)
