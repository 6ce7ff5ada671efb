"""Checks of the Docker image's answers for .ci/docker_smoke.sh (standard library only: it also runs inside the
container, whose python has no test dependencies).

    python smoke_checks.py validate KIND BODY_FILE [SOURCE] check one answer saved by curl (KIND: see CHECKS;
                                                           SOURCE: text /info's source must contain)
    python smoke_checks.py http BASE_URL PAYLOAD_DIR [--source TEXT]
                                                           ask every route with urllib and check each answer,
                                                           then that /metrics counted the answers

The payloads are local_test/payloads/*.json; the model is the tiny 32-dimensional test model.
"""
from __future__ import annotations

import json
import math
import sys
import urllib.request
from pathlib import Path

EMBED_DIM = 32


class CheckFailed(AssertionError):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _probabilities(row, n: int, what: str) -> None:
    expect(len(row) == n, f"{what}: {len(row)} probabilities, expected {n}")
    expect(all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in row), f"{what}: not probabilities: {row}")


def check_ping(body) -> str:
    expect(body == {"status": "ready"}, f"/ping answered {body}")
    return "ready"


def check_embed(body) -> str:
    # local_test/payloads/embed_texts.json: two texts, normalize true.
    expect(body.get("task") == "embed", f"task {body.get('task')!r}")
    expect(body.get("dim") == EMBED_DIM, f"dim {body.get('dim')}, expected {EMBED_DIM}")
    expect(body.get("normalized") is True, "not normalized")
    rows = body.get("text_embeddings")
    expect(isinstance(rows, list) and len(rows) == 2, f"{len(rows or [])} text embeddings, expected 2")
    expect(body.get("image_embeddings") == [], "image_embeddings not empty")
    norms = []
    for row in rows:
        expect(len(row) == EMBED_DIM and all(math.isfinite(x) for x in row), f"bad embedding row: {row}")
        norms.append(math.sqrt(sum(x * x for x in row)))
    expect(all(abs(n - 1.0) < 1e-4 for n in norms), f"norms {norms}, expected 1")
    expect(rows[0] != rows[1], "two different texts gave the same embedding")
    return f"2 x {EMBED_DIM}, norms {', '.join(f'{n:.6f}' for n in norms)}"


def check_rank(body) -> str:
    # local_test/payloads/rank_texts_for_image.json: one image query, three text candidates, top_k 2.
    expect(body.get("task") == "rank", f"task {body.get('task')!r}")
    expect(body.get("scoring") == "softmax", f"scoring {body.get('scoring')!r}")
    probs, cosines, rankings = body.get("probabilities"), body.get("cosine_similarities"), body.get("rankings")
    expect(len(probs) == 1 and len(cosines) == 1 and len(rankings) == 1, "expected one row per query")
    _probabilities(probs[0], 3, "rank")
    expect(abs(sum(probs[0]) - 1.0) < 1e-6, f"probabilities sum to {sum(probs[0])}, expected 1")
    expect(all(-1.0 - 1e-6 <= c <= 1.0 + 1e-6 for c in cosines[0]) and len(cosines[0]) == 3,
           f"cosines {cosines[0]}")
    best = max(range(3), key=lambda i: probs[0][i])
    expect(len(rankings[0]) == 2 and rankings[0][0] == best and len(set(rankings[0])) == 2,
           f"rankings {rankings[0]} do not start with the most probable candidate {best}")
    return f"probabilities {[round(p, 4) for p in probs[0]]} sum {sum(probs[0]):.9f}, rankings {rankings[0]}"


def check_classify(body) -> str:
    # local_test/payloads/classify_labelled.json: two images, three labelled classes, top_k 2.
    expect(body.get("task") == "classify", f"task {body.get('task')!r}")
    results = body.get("results")
    expect(isinstance(results, list) and len(results) == 2, "expected two results")
    labels = ["red square", "colour gradient", "photo of a dog"]
    for result in results:
        indices, names, probs = result["prompts"]
        expect(len(indices) == 2 and [labels[i] for i in indices] == names, f"prompts {result['prompts']}")
        _probabilities(probs, 2, "classify")
        expect(result["label"] == names[0] and result["confidence"] == probs[0], f"result {result}")
        expect(result["classification"] in (0, 1) and indices[0] in result["selected"], f"result {result}")
    return f"2 results, labels {[r['label'] for r in results]}"


def check_seed003(body) -> str:
    # local_test/payloads/seed003_classify.json: two images, four labelled classes, the default top 3.
    expect(isinstance(body, list) and len(body) == 2, f"expected a list of two answers, got {str(body)[:200]}")
    classes = ["person", "bag", "person with a bag", "red square"]
    for answer in body:
        expect(set(answer) == {"classification", "confidence", "prompts"}, f"keys {sorted(answer)}")
        indices, names, probs = answer["prompts"]
        expect(len(indices) == 3 and [classes[i] for i in indices] == names, f"prompts {answer['prompts']}")
        _probabilities(probs, 3, "seed 003")
        expect(probs == sorted(probs, reverse=True), f"probabilities not best first: {probs}")
        expect(answer["confidence"] == probs[0] and answer["classification"] in (0, 1), f"answer {answer}")
    return f"2 answers x top 3, classifications {[a['classification'] for a in body]}"


def check_execparams(body) -> str:
    expect(set(body) == {"MaxConcurrentTransforms", "BatchStrategy", "MaxPayloadInMB"}, f"keys {sorted(body)}")
    expect(body["BatchStrategy"] == "MultiRecord", f"BatchStrategy {body['BatchStrategy']!r}")
    expect(1 <= body["MaxPayloadInMB"] <= 100 and body["MaxConcurrentTransforms"] >= 1, f"{body}")
    expect(body["MaxPayloadInMB"] * body["MaxConcurrentTransforms"] <= 100, f"product above 100: {body}")
    return json.dumps(body, separators=(",", ":"))


def check_info(body, source: str = "") -> str:
    expect(body.get("embed_dim") == EMBED_DIM, f"embed_dim {body.get('embed_dim')}")
    expect(source in body.get("source", ""), f"source {body.get('source')!r} does not mention {source!r}")
    return f"source {body['source']!r}, device {body.get('device')}"


CHECKS = {"ping": check_ping, "embed": check_embed, "rank": check_rank, "classify": check_classify,
          "seed003": check_seed003, "execparams": check_execparams, "info": check_info}
# (kind, method, route, payload file); the order the http mode asks them in.
REQUESTS = [
    ("ping", "GET", "/ping", None),
    ("execparams", "GET", "/execution-parameters", None),
    ("info", "GET", "/info", None),
    ("embed", "POST", "/invocations", "embed_texts.json"),
    ("rank", "POST", "/invocations", "rank_texts_for_image.json"),
    ("classify", "POST", "/invocations", "classify_labelled.json"),
    ("seed003", "POST", "/invocations", "seed003_classify.json"),
]


def _http(base_url: str, payload_dir: Path, source: str) -> None:
    for kind, method, route, payload in REQUESTS:
        data = (payload_dir / payload).read_bytes() if payload else None
        request = urllib.request.Request(base_url.rstrip("/") + route, data=data, method=method,
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            expect(response.status == 200, f"{method} {route}: HTTP {response.status}")
            body = json.loads(response.read())
        summary = check_info(body, source) if kind == "info" else CHECKS[kind](body)
        print(f"  ok  {method} {route} ({kind}): {summary}", flush=True)
    _metrics(base_url)


def _metrics(base_url: str) -> None:
    """/metrics counts the requests just made: the metric files live under /tmp, the one writable folder."""
    with urllib.request.urlopen(base_url.rstrip("/") + "/metrics", timeout=30) as response:
        expect(response.status == 200, f"GET /metrics: HTTP {response.status}")
        text = response.read().decode()
    answered = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("clip_requests_total{") and 'route="/invocations"' in line
                   and 'status="200"' in line)
    posts = sum(1 for _, method, route, _ in REQUESTS if method == "POST" and route == "/invocations")
    expect(answered >= posts, f"GET /metrics counts {answered:g} answered /invocations, expected {posts} or more")
    print(f"  ok  GET /metrics: {answered:g} answered /invocations counted", flush=True)


def main(argv: list[str]) -> int:
    try:
        if len(argv) in (3, 4) and argv[0] == "validate":
            kind, body = argv[1], json.loads(Path(argv[2]).read_text())
            print(check_info(body, argv[3] if len(argv) == 4 else "") if kind == "info" else CHECKS[kind](body))
        elif len(argv) in (3, 5) and argv[0] == "http":
            source = argv[4] if len(argv) == 5 and argv[3] == "--source" else ""
            _http(argv[1], Path(argv[2]), source)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (CheckFailed, KeyError, IndexError, TypeError, ValueError, OSError) as exc:
        print(f"CHECK FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
