"""Scale benchmark: corpus encoding on Ray Data against one process, and approximate indexes on
real embeddings (recall@10 against exact search, query latency), up to 1M vectors built from shards.

    python scripts/bench_scale.py            # the full run (about 30 minutes on 2 cores)
    python scripts/bench_scale.py --quick    # every part, small (a test runs it)
    python scripts/bench_scale.py --render-only results/scale.json   # the Markdown again, from the JSON

1. Encoding: the first --texts texts of the pool (every text of ../shared/data, see `text_pool`),
   written as one JSONL corpus file and indexed by `Retriever.build` with the int8 backend, once
   in one process (2 threads) and once on Ray (the file read as a Ray dataset in input blocks of
   --shard-size documents, 2 actors of 1 CPU and 1 thread), each in a subprocess of its own; then
   on Ray again with one worker killed mid-run (its process exits before writing block 3, once). Throughput ratio,
   peak resident memory of the process and of each Ray worker, and the embeddings of the three
   runs compared.
2. Recall on real embeddings: every text of the pool encoded once (int8, cached under
   --cache-dir); 1,000 of them held out as queries (evenly spaced), the rest the database;
   recall@10 against exact search and the per-query latency of IVF-flat, IVF-PQ (with and
   without fp16 re-ranking) and HNSW.
3. 1M vectors clustered around the real ones (database vector i % n plus Gaussian noise of
   --noise per dimension, renormalised), written in shards of 100k; IVF-flat and IVF-PQ with
   re-ranking trained on a sample and filled shard by shard: build seconds, resident memory,
   query p50 / p95, recall@10 against exact search. Target: recall@10 >= 0.95 at p50 <= 2 ms.
   Random unit vectors have no structure and understate every approximate index; the earlier
   index benchmark (results/index_scale.md) shows them as the worst case.

Writes results/scale.json and results/scale.md (command, machine, date).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (  # noqa: E402
    REPO,
    command_line,
    header_lines,
    load_average_text,
    machine_info,
    markdown_table,
    peak_rss_mb,
    utc_date,
    versions,
    write_results,
)

SHARED = REPO.parent / "shared" / "data"
K = 10
REPORT_PREFIX = "BENCH_SCALE_REPORT "  # the worker's report line (Ray may print its own lines on stdout)
TARGET = {"recall": 0.95, "p50_ms": 2.0}


def log(message: str) -> None:
    print(f"[bench_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the text pool ------------------------------------------------------------------------------------
def text_pool() -> list[str]:
    """Every distinct text of ../shared/data in a fixed order: the intent sets' CSV files (text
    column), STS-B's sentence pairs, and the SciFact and Cranfield documents and queries."""
    seen: dict[str, None] = {}
    for path in sorted(SHARED.rglob("*.csv")):
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                for key in ("text", "sentence1", "sentence2"):
                    if row.get(key):
                        seen.setdefault(" ".join(row[key].split()), None)
    for path in sorted(SHARED.rglob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                text = " ".join(f"{record.get('title', '')} {record.get('text', '')}".split())
                if text:
                    seen.setdefault(text, None)
    return list(seen)


# -- 1. encoding: one process against Ray ---------------------------------------------------------------
def encode_worker(spec_path: str) -> int:
    """Run one index build as the spec says and print its report as JSON (a subprocess)."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    from textmatch import IndexConfig, MatchingNetwork, Retriever
    from textmatch.retrieval.ray_encoding import CRASH_ENV, RayEngine

    texts = spec["texts"]
    model = MatchingNetwork.from_pretrained(backend="onnx-int8", num_threads=spec["threads"])
    engine = None
    if spec["engine"] == "ray":
        import ray

        env = {CRASH_ENV: spec["crash_control"]} if spec.get("crash_control") else {}
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
        engine = RayEngine(concurrency=2, num_cpus=1, backend="onnx-int8", num_threads=1, block_size=spec["shard_size"])
    config = IndexConfig(index_kind="exact", bm25=False, shard_size=spec["shard_size"], batch_size=spec["batch_size"])
    start = time.perf_counter()
    built = Retriever.build(model, spec["corpus"], spec["folder"], config, show_progress_bar=False, engine=engine)
    seconds = time.perf_counter() - start
    np.save(spec["vectors_out"], np.load(Path(spec["folder"]) / "vectors.npy"))
    report = {"engine": spec["engine"], "texts": texts, "seconds": seconds, "texts_per_s": texts / seconds,
              "process_peak_rss_mb": peak_rss_mb(), "last_build": built.last_build,
              "passage_docs_sha256": hashlib.sha256("\n".join(built.passage_docs).encode("utf-8")).hexdigest()}
    if spec.get("crash_control"):
        marker = Path(spec["crash_control"] + ".crashed")
        report["worker_killed"] = marker.is_file()
        report["killed_pid"] = int(marker.read_text().strip()) if marker.is_file() else None
    print(REPORT_PREFIX + json.dumps(report), flush=True)
    return 0


def run_encode(engine: str, texts: int, shard_size: int, work: Path, crash_shard: int | None = None,
               batch_size: int = 64) -> dict[str, Any]:
    name = f"{engine}{'-crash' if crash_shard is not None else ''}{'' if batch_size == 64 else f'-batch{batch_size}'}"
    corpus = work / "corpus.jsonl"  # the file both engines read: Ray in blocks of shard_size documents
    if not corpus.is_file():
        with open(corpus, "w", encoding="utf-8") as fh:
            for i, text in enumerate(text_pool()[:texts]):
                fh.write(json.dumps({"_id": f"t{i:07d}", "title": "", "text": text}) + "\n")
    spec = {"engine": engine, "texts": texts, "shard_size": shard_size, "threads": 2 if engine == "local" else 1,
            "folder": str(work / name), "vectors_out": str(work / f"{name}.npy"), "corpus": str(corpus),
            "batch_size": batch_size}
    if crash_shard is not None:
        control = work / f"{name}.control"
        control.write_text(str(crash_shard), encoding="utf-8")
        spec["crash_control"] = str(control)
    spec_path = work / f"{name}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    log(f"encoding {texts} texts: {name}")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out = subprocess.run([sys.executable, __file__, "--encode-worker", str(spec_path)], capture_output=True, text=True,
                         env=env, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(REPORT_PREFIX)]
    if not lines:
        raise SystemExit(f"{name} printed no report:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    report = json.loads(lines[-1][len(REPORT_PREFIX):])
    report["vectors"] = spec["vectors_out"]
    return report


def encoding_part(texts: int, shard_size: int, work: Path) -> dict[str, Any]:
    local = run_encode("local", texts, shard_size, work)
    ray = run_encode("ray", texts, shard_size, work)
    crash = run_encode("ray", texts, shard_size, work, crash_shard=3)
    # int8 quantises activations per batch: the same process with another batch size is the noise floor
    half = run_encode("local", texts, shard_size, work, batch_size=32)
    base = np.load(local.pop("vectors"))
    for report in (ray, crash, half):
        other = np.load(report.pop("vectors"))
        report["same_shape_as_local"] = other.shape == base.shape
        report["same_passages_as_local"] = report["passage_docs_sha256"] == local["passage_docs_sha256"]
        report["max_abs_diff_to_local"] = float(np.abs(other - base).max()) if other.shape == base.shape else None
        report["min_cosine_to_local"] = float((other * base).sum(1).min()) if other.shape == base.shape else None
    return {"local": local, "ray": ray, "ray_worker_killed": crash, "local_batch_32": half,
            "throughput_ratio_ray_to_local": ray["texts_per_s"] / local["texts_per_s"]}


# -- 2. and 3. indexes on real embeddings -------------------------------------------------------------------
def real_embeddings(texts: list[str], cache_dir: Path) -> np.ndarray:
    """g'(text) of every text (int8 backend, unit length), cached by the texts' and model's hash."""
    from textmatch import MatchingNetwork
    from textmatch.retrieval.retriever import model_fingerprint

    model = MatchingNetwork.from_pretrained(backend="onnx-int8")
    digest = hashlib.sha256(("\0".join(texts) + model_fingerprint(model)).encode("utf-8")).hexdigest()[:16]
    path = cache_dir / f"pool-{len(texts)}-{digest}.npy"
    if path.is_file():
        return np.load(path)
    log(f"encoding the pool: {len(texts)} texts (int8), cached at {path}")
    start = time.perf_counter()
    emb = model.encode(texts, batch_size=64, role="support").astype(np.float32)
    log(f"encoded in {time.perf_counter() - start:.0f} s")
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def exact_top_k(db: np.ndarray, queries: np.ndarray, k: int = K, chunk: int = 100_000) -> np.ndarray:
    """The k best positions of each query by inner product over `db` (a memmap is fine)."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_p = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(db), chunk):
        s = queries @ np.asarray(db[start : start + chunk]).T  # (m, chunk)
        p = np.broadcast_to(np.arange(start, start + s.shape[1]), s.shape)
        s, p = np.concatenate([best_s, s], 1), np.concatenate([best_p, p], 1)
        keep = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_p = np.take_along_axis(s, keep, 1), np.take_along_axis(p, keep, 1)
    return best_p


def measure(index: Any, queries: np.ndarray, truth: np.ndarray, timed: int) -> dict[str, Any]:
    """recall@10 over every query (batch search) and latency of single-query searches."""
    _, found = index.search(queries, K)
    ids = [[int(d) for d in row] for row in found]
    recall = float(np.mean([len(set(f) & set(t.tolist())) / K for f, t in zip(ids, truth)]))
    lat = []
    for q in queries[:timed]:
        start = time.perf_counter()
        index.search(q[None, :], K)
        lat.append((time.perf_counter() - start) * 1000)
    return {"recall_at_10": recall, "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95))}


def build_from_shards(kind: str, db: np.ndarray, shard: int, **options: Any) -> tuple[Any, float]:
    """An index trained on an evenly spread sample, then filled shard by shard from `db`."""
    from textmatch.retrieval.vector_index import FaissIndex

    start = time.perf_counter()
    index = FaissIndex(db.shape[1], kind=kind, **options)
    if kind in ("ivfflat", "ivfpq"):
        nlist = index.nlist or FaissIndex.default_nlist(len(db))
        index.nlist = nlist
        sample = np.asarray(db[np.linspace(0, len(db) - 1, min(len(db), 64 * nlist)).astype(np.int64)])
        index.train(sample)
    for first in range(0, len(db), shard):
        part = np.asarray(db[first : first + shard], dtype=np.float32)
        index.add(part, [str(first + i) for i in range(len(part))])
    return index, time.perf_counter() - start


def index_rows(db: np.ndarray, queries: np.ndarray, truth: np.ndarray, configs: list[tuple[str, str, dict]],
               shard: int, timed: int) -> list[dict[str, Any]]:
    rows = []
    for label, kind, options in configs:
        log(f"{label} on {len(db)} vectors")
        before = peak_rss_mb()
        index, seconds = build_from_shards(kind, db, shard, **options)
        row = {"index": label, "kind": kind, "options": index.options(), "n": len(db), "build_s": seconds,
               "peak_rss_mb_after_build": peak_rss_mb(), "peak_rss_mb_before": before}
        for knob, values in (("nprobe", (16, 32, 64)),) if kind in ("ivfflat", "ivfpq") else (("ef_search", (64, 128)),):
            for value in values:
                setattr(index, knob, value)
                rows.append({**row, knob: value, **measure(index, queries, truth, timed)})
        del index
    return rows


def index_part(emb: np.ndarray, n_million: int, noise: float, cache_dir: Path, timed: int, quick: bool) -> dict[str, Any]:
    held = np.linspace(0, len(emb) - 1, min(1000, len(emb) // 10)).astype(np.int64)
    mask = np.ones(len(emb), dtype=bool)
    mask[held] = False
    queries, db = emb[held], emb[mask]
    dim = db.shape[1]
    configs = [("IVF-flat", "ivfflat", {}), ("IVF-PQ", "ivfpq", {"pq_m": dim // 8}),
               ("IVF-PQ + fp16 re-rank x10", "ivfpq", {"pq_m": dim // 8, "rerank": 10}),
               ("HNSW (M=32)", "hnsw", {"hnsw_m": 32})]
    truth = exact_top_k(db, queries)
    real = index_rows(db, queries, truth, configs, shard=20_000, timed=timed)
    # 1M vectors clustered around the real ones, in shards of 100k on disk
    path = cache_dir / f"clustered-{n_million}-{len(db)}-{noise}.npy"
    shard = 100_000 if not quick else 10_000
    if not path.is_file():
        log(f"writing {n_million} clustered vectors to {path}")
        big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_million, dim))
        rng = np.random.default_rng(0)
        for first in range(0, n_million, shard):
            rows = np.arange(first, min(n_million, first + shard))
            x = db[rows % len(db)] + noise * rng.standard_normal((len(rows), dim)).astype(np.float32)
            big[first : first + len(rows)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        big.flush()
        del big
    big = np.load(path, mmap_mode="r")
    log("exact ground truth on the clustered vectors")
    truth_big = exact_top_k(big, queries)
    million = index_rows(big, queries, truth_big, [c for c in configs if c[1] != "hnsw"], shard=shard, timed=timed)
    return {"n_database": len(db), "n_queries": len(queries), "dim": dim, "real": real,
            "clustered": {"n": n_million, "noise": noise, "shard": shard, "rows": million}}


# -- report -----------------------------------------------------------------------------------------------
def fmt(x: Any, digits: int = 2) -> str:
    return "–" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def render(report: dict[str, Any]) -> str:
    lines = header_lines([("Command", f"`{report['command']}`"), ("Date", report["date"]),
                          ("Machine", ", ".join(f"{k}: {v}" for k, v in report["machine"].items())),
                          ("Versions", ", ".join(f"{k} {v}" for k, v in report["versions"].items())),
                          ("Load average at the end", report["load_average"])],
                         title="Scale: encoding on Ray Data, indexes built from shards (scripts/bench_scale.py)")
    enc = report["encoding"]
    lines += ["## 1. Encoding: one process against Ray Data", "",
              f"{enc['local']['texts']} texts of ../shared/data, all-MiniLM-L6-v2 with the int8 backend, "
              "read from one JSONL file: in shards of " + str(report["settings"]["shard_size"]) + " passages in one process, "
              "in input blocks of as many documents on Ray; each run in a subprocess of its own.", ""]
    rows = []
    runs = [("one process, 2 threads", enc["local"]), ("Ray, 2 actors x 1 thread", enc["ray"]),
            ("Ray, a worker killed mid-run", enc["ray_worker_killed"])]
    if "local_batch_32" in enc:
        runs.append(("one process, batch 32 instead of 64 (int8 noise floor)", enc["local_batch_32"]))
    for name, r in runs:
        workers = r["last_build"].get("ray", {}).get("workers", {})
        same = r.get("same_passages_as_local")
        rows.append([name, fmt(r["seconds"], 1), fmt(r["texts_per_s"], 0), fmt(r["process_peak_rss_mb"], 0),
                     ", ".join(fmt(v, 0) for v in workers.values()) or "–",
                     "(reference)" if same is None else "yes" if same else "NO",
                     fmt(r.get("max_abs_diff_to_local"), 4) if "max_abs_diff_to_local" in r else "(reference)",
                     fmt(r.get("min_cosine_to_local"), 4) if "min_cosine_to_local" in r else "(reference)"])
    lines += markdown_table(["run", "seconds", "texts/s", "driver peak MiB", "worker peak MiB", "same passages, same order",
                             "max |diff| to one process", "min cosine to one process"], rows)
    lines += ["", "The int8 backend quantises activations per batch (dynamic quantisation), so the same texts batched "
              "differently get slightly different embeddings; the batch-32 run shows that floor within one process. "
              "With the torch backend the engines agree to 1e-5 (tests/retrieval/test_ray_encoding.py)."]
    killed = enc["ray_worker_killed"]
    ray_run = enc["ray"]["last_build"]["ray"]
    if "prepare_seconds" in ray_run:
        lines += ["", f"Inside the Ray run ({ray_run['seconds']:.1f} s from Ray's start to the last block): "
                  f"{ray_run['prepare_seconds']:.1f} s preparing (the model copy the actors load and its one int8 export; "
                  "the one-process run reuses the export cached next to the model), "
                  f"{ray_run['first_block_seconds']:.1f} s from the pipeline's start to its first finished block "
                  "(actors starting, loading the model, encoding their first blocks), the rest encoding. The build around it (reading the blocks' "
                  "passages back, filling the index, writing the folder) is in the seconds column."]
    lines += ["", f"Throughput ratio Ray / one process: {enc['throughput_ratio_ray_to_local']:.2f}. "
              f"Killed run: worker process {killed.get('killed_pid')} exited before writing input block 3 "
              f"({'it did' if killed.get('worker_killed') else 'it did not'}); the run completed with "
              f"{killed['last_build'].get('blocks', killed['last_build'].get('shards'))} blocks and embeddings "
              f"{'equal in shape' if killed.get('same_shape_as_local') else 'NOT equal in shape'} to the one-process run.", ""]
    idx = report["indexes"]
    cols = ["index", "n", "knob", "build s", "recall@10", "p50 ms", "p95 ms", "process peak MiB so far"]

    def table(rows_in: list[dict[str, Any]]) -> list[str]:
        out = []
        for r in rows_in:
            knob = f"nprobe {r['nprobe']}" if "nprobe" in r else f"ef_search {r['ef_search']}"
            out.append([r["index"], str(r["n"]), knob, fmt(r["build_s"], 1), fmt(r["recall_at_10"], 3),
                        fmt(r["p50_ms"], 2), fmt(r["p95_ms"], 2), fmt(r["peak_rss_mb_after_build"], 0)])
        return markdown_table(cols, out)

    lines += ["## 2. Recall on real embeddings", "",
              f"{idx['n_database']} texts of ../shared/data as the database, {idx['n_queries']} held-out texts as "
              f"queries, dim {idx['dim']}; recall@10 against exact search; latency of one query at a time "
              f"({report['settings']['timed']} queries, faiss on {report['settings']['threads']} threads). Built from shards of 20,000. "
              "The memory column is the benchmark process's peak resident memory so far (ru_maxrss), not one index's size.", ""]
    lines += table(idx["real"])
    c = idx["clustered"]
    lines += ["", f"## 3. {c['n']:,} vectors clustered around the real ones", "",
              f"Database vector i % n plus Gaussian noise of {c['noise']} per dimension, renormalised; written and "
              f"indexed in shards of {c['shard']:,}; the same held-out queries.", ""]
    lines += table(c["rows"])
    best = [r for r in c["rows"] if r["recall_at_10"] >= TARGET["recall"]]
    met = [r for r in best if r["p50_ms"] <= TARGET["p50_ms"]]
    lines += ["", f"Target recall@10 >= {TARGET['recall']} at p50 <= {TARGET['p50_ms']} ms on the {c['n']:,} index: "
              + (f"**met** by {met[0]['index']} ({'nprobe ' + str(met[0].get('nprobe'))}): recall {met[0]['recall_at_10']:.3f}, "
                 f"p50 {met[0]['p50_ms']:.2f} ms" if met else "**not met**"
                 + (f" (recall reached, fastest p50 {min(r['p50_ms'] for r in best):.2f} ms)" if best else "")), ""]
    lines += ["BM25: bm25s builds and searches in one process, its memory growing with the collection's tokens; it is "
              "not sharded. Hybrid search works on sharded vector indexes (the BM25 side stays whole).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every part, small")
    parser.add_argument("--texts", type=int, default=20_000, help="texts for the encoding comparison")
    parser.add_argument("--million", type=int, default=1_000_000, help="clustered vectors in part 3")
    parser.add_argument("--noise", type=float, default=0.02, help="Gaussian noise per dimension in part 3")
    parser.add_argument("--timed", type=int, default=300, help="queries timed one at a time")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "textmatch-bench")
    parser.add_argument("--output-dir", type=Path, default=REPO / "results")
    parser.add_argument("--render-only", type=Path, metavar="JSON",
                        help="render the Markdown of an earlier run's JSON again (no measuring)")
    parser.add_argument("--encode-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.encode_worker:
        return encode_worker(args.encode_worker)
    if args.render_only:
        report = json.loads(args.render_only.read_text(encoding="utf-8"))
        write_results(args.render_only.parent, args.render_only.stem, report, render)
        return 0
    if not SHARED.is_dir():
        raise SystemExit(f"needs the benchmark data in {SHARED}")
    texts = args.texts if not args.quick else 600
    shard_size = 1000 if not args.quick else 100
    million = args.million if not args.quick else 30_000
    pool = text_pool()
    if args.quick:
        pool = pool[:5000]
    with tempfile.TemporaryDirectory(prefix="textmatch-scale-") as tmp:
        encoding = encoding_part(texts, shard_size, Path(tmp))
    import faiss

    faiss.omp_set_num_threads(min(2, os.cpu_count() or 1))
    emb = real_embeddings(pool, args.cache_dir)
    indexes = index_part(emb, million, args.noise, args.cache_dir, args.timed if not args.quick else 20, args.quick)
    report = {"command": command_line(__file__, argv if argv is not None else sys.argv[1:]), "date": utc_date(),
              "machine": machine_info(), "versions": versions(["textmatch", "ray", "faiss-cpu", "onnxruntime", "numpy"]),
              "load_average": load_average_text(),
              "settings": {"texts": texts, "shard_size": shard_size, "pool": len(pool), "timed": args.timed,
                           "threads": min(2, os.cpu_count() or 1), "quick": args.quick},
              "encoding": encoding, "indexes": indexes}
    stem = "scale" if not args.quick else "scale_quick"
    write_results(args.output_dir, stem, report, render)
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
