"""Benchmarks the real server against the raw model, against itself with its optimisations off and against
itself in fp32, in one run.

    .venv/bin/python local_test/benchmark.py                 # the full run, about 10-11 minutes on 2 cores
    .venv/bin/python local_test/benchmark.py --quick         # every row once, briefly: a check, not figures
    .venv/bin/python local_test/benchmark.py --scenarios image --rounds 2 --seconds 4 --skip-raw
    .venv/bin/python local_test/benchmark.py --servers b,e --skip-raw \
        --scenarios image-c1,image-c8,text-c1,text-c8      # what the front costs, about 4 minutes

Everything is measured side by side on this machine in this run, so the ratios mean something even on a
noisy machine (absolute figures do not travel between machines; the report names the CPU and whether it
has AMX). Five things are compared:

(a) the raw model: open_clip's own ViT-B-32 in a process of its own, no server (2 torch threads,
    `torch.inference_mode()`), in fp32 and in bf16 (open_clip's `precision="bf16"`: weights bf16, LayerNorms
    fp32; every shape warmed up before it is timed, as oneDNN builds bf16 kernels on a shape's first calls).
    Up front, with no server running: fp32 encode_image on preprocessed tensors at batch 1, 8, 16, 32;
    fp32 encode_text at batch 8 on short texts, padded to 77 tokens and trimmed to the prompt; decode +
    preprocess of one 640x480 JPEG (full and draft); and, per precision, draft decode + preprocess + one
    batch-1 forward (the latency a lone request cannot beat); bf16 draft decode + preprocess + encode_image
    at batch 8; bf16 encode_text trimmed to the prompt at batch 8. The process then stays (idle) and runs
    rounds of its own interleaved with the servers': image-c8 (fp32 batch 8 on tensors; bf16 decode +
    preprocess + batch 8), image-c1 (decode + preprocess + batch-1 forward, fp32 and bf16) and text-c8
    (bf16 trimmed batch 8). The targets use those side-by-side figures;
(b) `./serve` with the product's defaults (no PRECISION: the product picks it for the hardware), with the
    front on (FRONT=on: nginx takes the port and passes requests to gunicorn on a unix socket; so the
    benchmark needs nginx installed);
(c) `./serve` with MAX_BATCH_SIZE=1 TEXT_CACHE_SIZE=0 TEXT_TRIM=false: one forward pass per item, no text
    cache, texts padded to 77 tokens. (b) vs (c) isolates batching, the cache and trimming;
(d) `./serve` with PRECISION=fp32: the product as it ran in fp32, for the memory, cold-start and speed
    ratios against fp32;
(e) `./serve` with FRONT=off: gunicorn on the port itself, for what the front costs.

Every server's environment is the caller's with every name in clip_sagemaker.settings.ENVIRONMENT removed,
then only its variant's settings added. The servers start one after another (each one's cold start: from
starting ./serve to the first /ping 200) on free 127.0.0.1 ports (LOG_LEVEL=warning) with a full-size
ViT-B-32 model directory holding seeded random weights (built once with clip_sagemaker.model_files and
cached under --work-dir); only one is under load at any moment (the others idle: their threads sleep).
Each load scenario runs a short warm-up on each, then alternates (b), (c), (d), (e), [(a)]... for --rounds rounds
of --seconds each. The client is a pool of threads on the same machine, one requests.Session each, with
every request body prepared before the clock starts:

  image-c1, image-c8          one 640x480 JPEG per request as a raw body (Content-Type: image/jpeg);
  text-c1, text-c8            {"task": "embed", "texts": [8 texts of 4-8 words]}, every text new (a counter
                              is spelled into each), so that the text cache cannot help;
  classify-c1/-c4/-c8         seed 003: {"images": [1 JPEG], "classes": the same 6 [label, id] pairs}.

For each cell: items/s (images or texts embedded per second; for classification, requests per second),
p50 and p99 latency, the error count, and the CPU cores busy on average in the server, in the client and in
other processes (anything else running on the machine disturbs the figures; the report says so loudly). Any
answer other than 200 stops the run with exit status 1.

Memory (psutil): each server's resident memory (VmRSS summed over the gunicorn master and its workers) is
sampled every 0.25 s while it is under load, and its processes' VmHWM (the kernel's peak) is read after
start and at the end; the sampled peak is compared with a process that has only loaded the model
(clip_sagemaker.model.load_model, then gc), VmHWM of (b) with that of (d).

At the end it prints markdown tables and the targets, each PASS or MISS:
  [bf16]     image c=8: (b) >= 0.7 x raw bf16 decode + preprocess + encode_image at batch 8;
             short texts c=8: (b) > raw bf16 trimmed encode_text at batch 8;
             image c=1 p50 latency of (b) <= 1.15 x raw bf16 (draft decode + preprocess + batch-1 forward);
             VmHWM of (b) <= 0.8 x that of (d); cold start of (b) <= 1.5 x that of (d);
  [batching] image c=8: (b) >= 1.4 x (c); short texts c=8: (b) >= 7 x (c); classification c=4: (b) >= 4 x (c);
  [fp32]     image c=8: (d) >= 0.8 x raw fp32 at batch 8; image c=1 p50 of (d) <= 1.1 x raw fp32 (draft decode
             + preprocess + batch-1 forward); memory: sampled peak RSS of (b) <= 1.25 x the model-only process;
  [front]    p50 at c=1 (images, texts): (b) adds at most 1 ms over (e); throughput at c=8 (images, texts):
             (b) >= 0.97 x (e); each with its per-round figures, to show when the rounds' spread is larger.
A target whose inputs were not measured (--scenarios, --skip-raw) is "n/a". The exit status is 0 even when
a target is missed: this reports, it does not gate.

Every process it starts is always stopped, also on Ctrl-C; traffic goes to 127.0.0.1 only. Progress goes to
stderr, the report to stdout; --json OUT also writes every figure as JSON. Server logs are kept in
WORK_DIR/logs/. Nothing here belongs in tests/: tests never time things.

Modules: common (shared constants), inputs (request bodies), processes (psutil accounting), servers (the
./serve variants), raw_worker (the raw model's own program), raw_process (its handle and rows), model_only
(the memory baseline's program), load (rounds and scenarios), machine (the CPU and versions), targets,
report, cli (the run's order).
"""
