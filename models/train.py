#!/usr/bin/env python3
"""Trains the sensor's two models from labelled feature rows.

Input: one or more CSVs (`--data`, repeatable): the simulated set written by
`sensor-dataset` and rows the live sensor recorded in the traffic lab
(`cargo xtask lab record`). Header = feature schema names, optionally
`group` (the scenario instance a row belongs to), then `label`; each CSV has
a `.meta.json` beside it (the schema as the sensor defines it, and how the
data was made). Rows labelled `anomaly` (attacks no classifier class covers,
such as slow HTTP or exfiltration) are left out of the classifier and serve
as positives when the autoencoder is evaluated. Output, in --out:

  flow-classifier.onnx / .card.json   MLP over benign/flood/scan/bruteforce
  flow-autoencoder.onnx / .card.json  autoencoder trained on benign rows;
                                      output = reconstruction error
  fixtures/expected_scores.csv        ONNX Runtime scores of the recorded
                                      fixture rows, which the Rust tests
                                      compare with tract

Everything is seeded and single-threaded, so the same input gives the same
ONNX bytes. Feature scaling (StandardScaler) is folded into the models' first
layer / first nodes, because tract has no `Scaler` op.
"""

import os

# Single-threaded BLAS: multithreaded reductions may sum in a different order.
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = "1"

import argparse
import gzip
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
)
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler

CLASSES = ["benign", "flood", "scan", "bruteforce"]
EXTRA_LABELS = ["anomaly"]
SEED = 20261122
# Default costs of a false positive (benign row over the threshold) and a
# false negative (a missed attack instance); `--fp-cost` / `--fn-cost`.
FP_COST, FN_COST = 1.0, 100.0
AE_BENIGN_QUANTILE = 0.999
BLOCK = 1000  # rows per split block (see split())
OPSET = 13
# tract must reproduce ONNX Runtime's scores to this relative difference
# (|a - b| / max(1, |b|)) on every validation row.
EXPORT_TOLERANCE = 1e-4
# Largest up-weighting of a row of a small group (see group_weights()).
GROUP_WEIGHT_CAP = 30.0
# Optimiser settings both models share.
MLP_COMMON = dict(
    activation="relu",
    solver="adam",
    alpha=1e-4,
    batch_size=256,
    learning_rate_init=1e-3,
    max_iter=40,
    shuffle=True,
    random_state=SEED,
    n_iter_no_change=8,
)
QUANTILES = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
REBUILD = "cargo xtask train"


def meta_path(csv_path):
    """`x.csv` and `x.csv.gz` both have `x.meta.json` beside them."""
    name = csv_path.name.removesuffix(".gz").removesuffix(".csv")
    return csv_path.with_name(name + ".meta.json")


def load(csv_path):
    """Returns (feature names, x, y, groups); y = -1 for `anomaly` rows."""
    opener = gzip.open if csv_path.suffix == ".gz" else open
    with opener(csv_path, "rt") as f:
        header = f.readline().strip().split(",")
    if header[-1] != "label":
        sys.exit(f"{csv_path}: last CSV column must be `label`")
    has_group = len(header) >= 2 and header[-2] == "group"
    names = header[:-2] if has_group else header[:-1]
    raw = np.loadtxt(csv_path, delimiter=",", skiprows=1, dtype=str, ndmin=2)
    x = raw[:, : len(names)].astype(np.float32)
    labels = raw[:, -1]
    unknown = sorted(set(labels) - set(CLASSES) - set(EXTRA_LABELS))
    if unknown:
        sys.exit(f"{csv_path}: unknown labels {unknown}")
    y = np.array([CLASSES.index(l) if l in CLASSES else -1 for l in labels], dtype=np.int64)
    if has_group:
        groups = raw[:, -2]
    else:
        # No scenario ids: each block of rows of one label is a group.
        groups = np.array([f"{l}:{i // BLOCK}" for i, l in enumerate(labels)])
    return names, x, y, groups, has_group


def split(n, rng):
    """Assigns contiguous blocks of BLOCK rows to train/val/test (70/15/15).
    Rows are in simulated time order, so a block holds neighbouring events of
    the same flows; splitting by block rather than by row keeps most of a
    flow's rows on one side."""
    blocks = np.arange((n + BLOCK - 1) // BLOCK)
    rng.shuffle(blocks)
    nb = len(blocks)
    part = np.empty(nb, dtype=np.int64)
    part[blocks[: int(nb * 0.7)]] = 0
    part[blocks[int(nb * 0.7) : int(nb * 0.85)]] = 1
    part[blocks[int(nb * 0.85) :]] = 2
    row_part = part[np.arange(n) // BLOCK]
    return [np.where(row_part == i)[0] for i in range(3)]


def fold_scaler_into_mlp(mlp, scaler):
    """x_s = (x - mu) / sd; first layer x_s W + b = x (W / sd) + (b - (mu / sd) W)."""
    mu = scaler.mean_.astype(np.float64)
    sd = scaler.scale_.astype(np.float64)
    w0 = mlp.coefs_[0].astype(np.float64)
    b0 = mlp.intercepts_[0].astype(np.float64)
    mlp.coefs_[0] = w0 / sd[:, None]
    mlp.intercepts_[0] = b0 - (mu / sd) @ w0


def classifier_onnx_softmax(mlp, n_features):
    """skl2onnx's export, with its single Softmax node."""
    return convert_sklearn(
        mlp,
        name="flow-classifier",
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(mlp): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )


def classifier_onnx(mlp, n_features):
    """skl2onnx's export with Softmax spelt out as whole-batch ops.

    tract runs Softmax, and any ReduceMax / ReduceSum over the class axis, as
    one vector-kernel call per row; for rows of 4 classes the per-call set-up
    dominates (measured: about two thirds of a 256-row batch). The same arithmetic,
    exp(z - max(z)) / sum(exp(z - max(z))), written with ops that each run
    once over the batch: Split + Max (row max as an element-wise max of the
    class columns), Sub, Exp, MatMul by a ones matrix (every column gets the
    row sum) and Div. Measured in tract: 256-row batch 305 -> 100 us.
    """
    onx = classifier_onnx_softmax(mlp, n_features)
    k = mlp.coefs_[-1].shape[1]
    g = onx.graph
    idx = [i for i, n in enumerate(g.node) if n.op_type == "Softmax"]
    assert len(idx) == 1, "expected one Softmax node in the skl2onnx export"
    sm = g.node[idx[0]]
    z, out = sm.input[0], sm.output[0]
    axis = next((a.i for a in sm.attribute if a.name == "axis"), -1)
    assert axis in (1, -1), f"Softmax over axis {axis}"
    cols = [f"softmax_z{j}" for j in range(k)]
    g.initializer.append(numpy_helper.from_array(np.ones((k, k), dtype=np.float32), "softmax_ones"))
    tail = [
        helper.make_node("Split", [z], cols, axis=1, name="softmax_columns"),
        helper.make_node("Max", cols, ["softmax_max"], name="softmax_max"),
        helper.make_node("Sub", [z, "softmax_max"], ["softmax_shifted"], name="softmax_shift"),
        helper.make_node("Exp", ["softmax_shifted"], ["softmax_exp"], name="softmax_exp"),
        helper.make_node("MatMul", ["softmax_exp", "softmax_ones"], ["softmax_sum"], name="softmax_sum"),
        helper.make_node("Div", ["softmax_exp", "softmax_sum"], [out], name="softmax_norm"),
    ]
    del g.node[idx[0]]
    for j, n in enumerate(tail):
        g.node.insert(idx[0] + j, n)
    onnx.checker.check_model(onx)
    return onx


def autoencoder_onnx(ae, scaler, n_features):
    """input -> (x - mu) * (1/sd) -> MLP -> mean((recon - x_s)^2, axis 1)."""
    inits = [
        numpy_helper.from_array(scaler.mean_.astype(np.float32), "mu"),
        numpy_helper.from_array((1.0 / scaler.scale_).astype(np.float32), "inv_sd"),
    ]
    nodes = [
        helper.make_node("Sub", ["input", "mu"], ["centred"], name="centre"),
        helper.make_node("Mul", ["centred", "inv_sd"], ["scaled"], name="scale"),
    ]
    cur = "scaled"
    n_layers = len(ae.coefs_)
    for i, (w, b) in enumerate(zip(ae.coefs_, ae.intercepts_)):
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"b{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"mm{i}"], name=f"matmul{i}"))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"], name=f"add{i}"))
        if i < n_layers - 1:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"a{i}"], name=f"relu{i}"))
            cur = f"a{i}"
        else:
            cur = f"z{i}"
    nodes += [
        helper.make_node("Sub", [cur, "scaled"], ["diff"], name="residual"),
        helper.make_node("Mul", ["diff", "diff"], ["sq"], name="square"),
        helper.make_node("ReduceMean", ["sq"], ["anomaly_score"], axes=[1], keepdims=0, name="mse"),
    ]
    graph = helper.make_graph(
        nodes,
        "flow-autoencoder",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("anomaly_score", TensorProto.FLOAT, [None])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="sensor models/train.py",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run(sess, output, x):
    return sess.run([output], {"input": x.astype(np.float32)})[0]


def cost_threshold(score, is_attack, groups):
    """Threshold minimising FP_COST*FP + FN_COST*FN on the validation rows.

    A false positive is a benign row over the threshold. A false negative is
    a missed attack, counted per scenario instance: each attack row weighs
    1/(rows of its group), so missing a tenth of one attack's rows costs
    FN_COST/10. (Counting every attack row as a whole FN would let the few
    benign-looking rows every attack contains, such as a brute-force
    attempt's handshake, drag the threshold down to where benign traffic
    alerts.) Among cuts of equal cost the highest is taken, and the threshold
    is placed midway (in log space) between the lowest alerting score and the
    next lower score, so unseen rows get the widest margin."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    a = is_attack[order]
    g = groups[order]
    _, inv, cnt = np.unique(g, return_inverse=True, return_counts=True)
    w_attack = np.where(a, 1.0 / cnt[inv], 0.0)
    fp = np.cumsum(~a)
    missed = w_attack.sum() - np.cumsum(w_attack)
    cost = FP_COST * fp + FN_COST * missed
    # Only cut between distinct scores.
    last = np.r_[s[1:] != s[:-1], True]
    cost = np.where(last, cost, np.inf)
    i = int(np.argmin(cost))
    no_alert_cost = FN_COST * w_attack.sum()
    if no_alert_cost <= cost[i]:
        return float(s[0]) + 1e-6, float(no_alert_cost)
    lo = float(s[i + 1]) if i + 1 < len(s) else 0.0
    hi = float(s[i])
    thr = float(np.sqrt(max(lo, 1e-12) * hi)) if lo > 0 else hi / 2
    return max(min(thr, hi), lo + 1e-12), float(cost[i])


def group_weights(y, source, groups, grouped):
    """Per-row weights under which every group (scenario instance) of a class
    in a data source weighs the same: a single-source ICMP flood yields a few
    dozen rows and a spoofed flood thousands, yet each is one attack to catch
    (and one benign program to stay quiet on). A row's weight is capped at
    GROUP_WEIGHT_CAP times the class's mean, so a handful of rows cannot
    dominate; each class keeps its total weight within its source. Sources
    without scenario ids (`grouped[k]` false) keep weight 1."""
    w = np.ones(len(y))
    for k in np.unique(source):
        if not grouped[k]:
            continue
        for c in np.unique(y):
            m = (source == k) & (y == c)
            if not m.any():
                continue
            _, inv, cnt = np.unique(groups[m], return_inverse=True, return_counts=True)
            wm = np.minimum(m.sum() / (len(cnt) * cnt[inv]), GROUP_WEIGHT_CAP)
            w[m] = wm * (m.sum() / wm.sum())
    return w


def tract_export_check(scorer, model_path, names, rows, expected):
    """Scores `rows` with `sensor score` (tract, as the workers run it) and
    compares with ONNX Runtime's `expected`; fails the build past tolerance."""
    with tempfile.TemporaryDirectory() as d:
        rows_csv, out_csv = Path(d) / "rows.csv", Path(d) / "scores.csv"
        # %.9g round-trips float32, so both runtimes see the same inputs.
        np.savetxt(rows_csv, rows, fmt="%.9g", delimiter=",", header=",".join(names), comments="")
        subprocess.run(
            [str(scorer), "score", "--model", str(model_path), "--rows", str(rows_csv), "--out", str(out_csv)],
            check=True,
        )
        got = np.loadtxt(out_csv, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    assert got.shape == expected.shape, f"{model_path}: tract gave {got.shape}, expected {expected.shape}"
    diff = np.abs(got - expected.astype(np.float64))
    rel = diff / np.maximum(1.0, np.abs(expected))
    check = {
        "checked": True,
        "split": "validation",
        "rows": int(len(rows)),
        "runtimes": f"tract via `sensor score` (the workers' batch plans and padding) "
        f"vs onnxruntime {ort.__version__}",
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(rel.max()),
        "tolerance_rel": EXPORT_TOLERANCE,
    }
    assert check["max_rel_diff"] <= EXPORT_TOLERANCE, f"{model_path}: tract differs from ONNX Runtime: {check}"
    return check


def per_class_metrics(y, probs):
    pred = probs.argmax(1)
    p, r, f, sup = precision_recall_fscore_support(
        y, pred, labels=list(range(len(CLASSES))), zero_division=0
    )
    out = {}
    for i, c in enumerate(CLASSES):
        yi = (y == i).astype(int)
        out[c] = {
            "precision": round(float(p[i]), 4),
            "recall": round(float(r[i]), 4),
            "f1": round(float(f[i]), 4),
            "pr_auc": round(float(average_precision_score(yi, probs[:, i])), 4) if yi.any() else None,
            "support": int(sup[i]),
        }
    cm = confusion_matrix(y, pred, labels=list(range(len(CLASSES))))
    return out, cm.tolist()


def binary_metrics(score, is_attack, thr):
    alert = score >= thr
    tp = int((alert & is_attack).sum())
    fp = int((alert & ~is_attack).sum())
    fn = int((~alert & is_attack).sum())
    tn = int((~alert & ~is_attack).sum())
    return {
        "threshold": thr,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": round(tp / max(tp + fp, 1), 4),
        "recall": round(tp / max(tp + fn, 1), 4),
        "false_positive_rate": round(fp / max(fp + tn, 1), 6),
        "pr_auc": round(float(average_precision_score(is_attack, score)), 4),
    }


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def main():
    global FP_COST, FN_COST
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data", required=True, type=Path, action="append", help="labelled CSV (repeatable)"
    )
    ap.add_argument("--fixture", required=True, type=Path, help="fixture rows.csv")
    ap.add_argument("--fp-cost", type=float, default=FP_COST, help="cost of a false positive")
    ap.add_argument("--fn-cost", type=float, default=FN_COST, help="cost of a missed attack")
    ap.add_argument("--out", required=True, type=Path, help="models directory")
    ap.add_argument(
        "--tract-scorer",
        type=Path,
        help="the `sensor` binary: its `score` subcommand checks tract against ONNX Runtime",
    )
    args = ap.parse_args()
    FP_COST, FN_COST = args.fp_cost, args.fn_cost

    schema = None
    sources, xs_, ys_, gs_, parts_, grouped = [], [], [], [], [], []
    rng = np.random.default_rng(SEED)
    offset = 0
    for k, path in enumerate(args.data):
        meta = json.loads(meta_path(path).read_text())
        if schema is None:
            schema = meta["schema"]
        elif meta["schema"] != schema:
            sys.exit(f"{path}: schema differs from {args.data[0]}")
        names, xk, yk, gk, grouped_k = load(path)
        grouped.append(grouped_k)
        if names != [f["name"] for f in schema["features"]]:
            sys.exit(f"{path}: CSV header does not match the schema in its .meta.json")
        sources.append({"file": path.name, "rows": int(len(yk)), **meta["dataset"]})
        xs_.append(xk)
        ys_.append(yk)
        gs_.append(np.array([f"{k}:{g}" for g in gk]))
        parts_.append([idx + offset for idx in split(len(yk), rng)])
        offset += len(yk)
    x = np.concatenate(xs_)
    y_all = np.concatenate(ys_)
    groups = np.concatenate(gs_)
    source_of = np.concatenate([np.full(len(v), k) for k, v in enumerate(ys_)])
    tr_all, va_all, te_all = (np.concatenate([p[i] for p in parts_]) for i in range(3))
    # `anomaly` rows: autoencoder evaluation only.
    anom_te = np.concatenate([va_all, te_all])
    anom_te = anom_te[y_all[anom_te] < 0]
    tr, va, te = (idx[y_all[idx] >= 0] for idx in (tr_all, va_all, te_all))
    y = np.where(y_all < 0, 0, y_all)
    nf = len(names)
    counts = {
        part: {c: int((y[idx] == i).sum()) for i, c in enumerate(CLASSES)}
        for part, idx in (("train", tr), ("validation", va), ("test", te))
    }
    print("rows per class:", counts, flush=True)
    for part, c in counts.items():
        missing = [k for k, v in c.items() if v == 0]
        if missing:
            sys.exit(f"{part} split has no rows of {missing}: simulate more episodes")

    scaler = StandardScaler().fit(x[tr].astype(np.float64))
    scaler.scale_ = np.where(scaler.scale_ < 1e-6, 1.0, scaler.scale_)
    xs = lambda idx: ((x[idx] - scaler.mean_) / scaler.scale_).astype(np.float32)

    # ---- classifier: balanced class weights (inverse frequency), each data
    # source weighs as much in total as the others (lab recordings are fewer
    # rows than the simulation but closer to real traffic), and within a
    # source every scenario instance of a class weighs the same.
    freq = np.bincount(y[tr], minlength=len(CLASSES)).astype(np.float64)
    cw = len(y[tr]) / (len(CLASSES) * np.maximum(freq, 1.0))
    src_n = np.bincount(source_of[tr], minlength=len(args.data)).astype(np.float64)
    sw = len(tr) / (len(args.data) * np.maximum(src_n, 1.0))
    gw = group_weights(y[tr], source_of[tr], groups[tr], grouped)
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), tol=1e-5, **MLP_COMMON)
    clf.fit(xs(tr), y[tr], sample_weight=cw[y[tr]] * sw[source_of[tr]] * gw)
    fold_scaler_into_mlp(clf, scaler)
    cls_onnx = classifier_onnx(clf, nf)
    cls_bytes = cls_onnx.SerializeToString()
    cls_sess = ort.InferenceSession(cls_bytes, providers=["CPUExecutionProvider"])
    # The spelt-out softmax must give skl2onnx's probabilities.
    ref_sess = ort.InferenceSession(
        classifier_onnx_softmax(clf, nf).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    sm_err = float(np.abs(run(cls_sess, "probabilities", x) - run(ref_sess, "probabilities", x)).max())
    print(f"classifier: spelt-out softmax vs Softmax node, max abs difference {sm_err:.3g}")
    assert sm_err <= 1e-6, f"spelt-out softmax differs from Softmax by {sm_err}"

    p_va = run(cls_sess, "probabilities", x[va])
    p_te = run(cls_sess, "probabilities", x[te])
    thr, val_cost = cost_threshold(1.0 - p_va[:, 0], y[va] != 0, groups[va])
    cls_metrics, cls_cm = per_class_metrics(y[te], p_te)
    cls_binary = binary_metrics(1.0 - p_te[:, 0], y[te] != 0, thr)
    # The same per data source: simulated rows are easier than lab rows.
    per_source = {}
    for k, src in enumerate(sources):
        m = source_of[te] == k
        if m.any():
            pc, cm = per_class_metrics(y[te][m], p_te[m])
            per_source[src["file"]] = {
                "per_class": pc,
                "confusion_matrix": cm,
                "attack_vs_benign_at_threshold": binary_metrics(
                    1.0 - p_te[m][:, 0], y[te][m] != 0, thr
                ),
            }
            print(f"classifier test on {src['file']}:", json.dumps(pc), flush=True)
    print("classifier test:", json.dumps(cls_metrics), "threshold", thr, flush=True)

    # ---- autoencoder on benign training rows (scaled space).
    ben_tr = tr[y[tr] == 0]
    ae = MLPRegressor(hidden_layer_sizes=(64, 16, 64), tol=1e-6, **MLP_COMMON)
    ae.fit(xs(ben_tr), xs(ben_tr))
    ae_onnx = autoencoder_onnx(ae, scaler, nf)
    ae_bytes = ae_onnx.SerializeToString()
    ae_sess = ort.InferenceSession(ae_bytes, providers=["CPUExecutionProvider"])
    e_va = run(ae_sess, "anomaly_score", x[va])
    e_te = run(ae_sess, "anomaly_score", x[te])
    ae_thr = float(np.quantile(e_va[y[va] == 0], AE_BENIGN_QUANTILE))
    ae_binary = binary_metrics(e_te, y[te] != 0, ae_thr)
    ae_recall = {
        c: round(float((e_te[y[te] == i] >= ae_thr).mean()), 4) if (y[te] == i).any() else None
        for i, c in enumerate(CLASSES)
    }
    if len(anom_te):
        e_an = run(ae_sess, "anomaly_score", x[anom_te])
        ae_recall["anomaly"] = round(float((e_an >= ae_thr).mean()), 4)
    print("autoencoder test:", json.dumps(ae_binary), flush=True)

    # ---- baseline quantiles of benign training rows, per feature.
    ben = x[tr][y[tr] == 0]
    baseline = {
        n: [round(float(v), 6) for v in np.quantile(ben[:, i], QUANTILES)] for i, n in enumerate(names)
    }
    # The share of those rows at or below each value, within the sensor's
    # rounding tolerance: drift monitoring's expected bin shares, exact where
    # values tie (a feature that is 0 on most rows).
    baseline_cdf = {
        n: [round(float((ben[:, i] <= v + 1e-6 * (1 + abs(v))).mean()), 6) for v in baseline[n]]
        for i, n in enumerate(names)
    }
    # The classifier's attack score (1 - P(benign)) on the same rows: the
    # sensor's drift monitoring of the model's scores.
    ben_score = 1.0 - run(cls_sess, "probabilities", ben)[:, 0]
    score_q = [round(float(v), 6) for v in np.quantile(ben_score, QUANTILES)]
    score_baseline = {
        "quantiles": QUANTILES,
        "benign_train": score_q,
        "benign_train_cdf": [
            round(float((ben_score <= v + 1e-6 * (1 + abs(v))).mean()), 6) for v in score_q
        ],
    }

    args.out.mkdir(parents=True, exist_ok=True)
    data_desc = {"sources": sources}
    data_desc["note"] = (
        "Rows come from the sensor's own feature code: the seeded traffic simulator "
        "(sensor-dataset) and, where listed, the live sensor recording the traffic lab "
        "(real tools in network namespaces; labels from the namespace that sent the "
        "traffic). No real capture is used for training: the captures in tests/data/pcaps "
        "are held out for `cargo xtask eval`."
    )
    data_desc["split"] = (
        f"per source, blocks of {BLOCK} consecutive rows, shuffled with seed {SEED}, 70/15/15"
    )
    data_desc["rows_per_split_and_class"] = counts
    data_desc["anomaly_rows_held_out_for_autoencoder_evaluation"] = int(len(anom_te))
    common = {
        "schema": schema,
        "data": data_desc,
        "input": "input",
        "baseline_quantiles": {"quantiles": QUANTILES, "benign_train": baseline, "benign_train_cdf": baseline_cdf},
        "rebuild_command": REBUILD,
        "training": {"seed": SEED, "script": "models/train.py", "requirements": "models/requirements.txt"},
    }
    cards = {
        "flow-classifier": (
            cls_bytes,
            {
                "name": "flow-classifier",
                "kind": "classifier",
                "output": "probabilities",
                "classes": CLASSES,
                "model": "MLP 32-16 relu, softmax (as Split/Max/Sub/Exp/MatMul/Div); "
                "StandardScaler folded into layer 1; "
                "inverse-frequency class weights; each data source weighs the same; "
                f"within a source each scenario instance of a class weighs the same "
                f"(row weight capped at {GROUP_WEIGHT_CAP:g}x)",
                "score_quantiles": score_baseline,
                "thresholds": {
                    "attack_score": thr,
                    "attack_score_definition": "1 - P(benign)",
                    "chosen_by": f"min {FP_COST:g}*FP + {FN_COST:g}*FN on the validation split "
                    "(FP per benign row, FN per missed attack instance; see train.py)",
                    "validation_cost": val_cost,
                },
                "metrics": {
                    "split": "test",
                    "per_class": cls_metrics,
                    "confusion_matrix": {"rows_true_cols_pred": CLASSES, "matrix": cls_cm},
                    "attack_vs_benign_at_threshold": cls_binary,
                    "per_source": per_source,
                },
            },
        ),
        "flow-autoencoder": (
            ae_bytes,
            {
                "name": "flow-autoencoder",
                "kind": "autoencoder",
                "output": "anomaly_score",
                "model": "MLP autoencoder 64-16-64 relu on benign rows; output = mean squared "
                "reconstruction error in standardised feature space; scaling as Sub/Mul nodes",
                "thresholds": {
                    "anomaly_score": ae_thr,
                    "chosen_by": f"{AE_BENIGN_QUANTILE} quantile of benign validation errors",
                },
                "metrics": {
                    "split": "test",
                    "attack_vs_benign_at_threshold": ae_binary,
                    "fraction_over_threshold_per_class": ae_recall,
                },
            },
        ),
    }
    def write_card(name, card):
        (args.out / f"{name}.card.json").write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")

    for name, (blob, card) in cards.items():
        digest = sha256(blob)
        card["version"] = f"{schema['version']}.0.0+{digest[:12]}"
        card["onnx_sha256"] = digest
        card.update(common)
        (args.out / f"{name}.onnx").write_bytes(blob)
        write_card(name, card)
        print(f"wrote {name}.onnx ({len(blob)} bytes, sha256 {digest[:12]})")

    # ---- export check: tract (through the sensor's own loader, batch plans
    # and padding) against ONNX Runtime on every validation row. Needs the
    # cards on disk, so it runs after they are written and adds to them.
    va_rows = va_all
    reference = {
        "flow-classifier": run(cls_sess, "probabilities", x[va_rows]),
        "flow-autoencoder": run(ae_sess, "anomaly_score", x[va_rows])[:, None],
    }
    for name, (_, card) in cards.items():
        if args.tract_scorer is None:
            card["export_check"] = {"checked": False, "why": "train.py ran without --tract-scorer"}
        else:
            card["export_check"] = tract_export_check(
                args.tract_scorer, args.out / f"{name}.onnx", names, x[va_rows], reference[name]
            )
            print(f"{name}: tract vs ONNX Runtime on {len(va_rows)} validation rows:", card["export_check"])
        write_card(name, card)

    # ---- expected scores of the recorded fixture rows (ONNX Runtime).
    fnames, fx, _, _, _ = load(args.fixture)
    assert fnames == names, "fixture header differs from the training data"
    fp = run(cls_sess, "probabilities", fx)
    fe = run(ae_sess, "anomaly_score", fx)
    fixdir = args.out / "fixtures"
    fixdir.mkdir(exist_ok=True)
    lines = [",".join([f"p_{c}" for c in CLASSES] + ["anomaly_score"])]
    for p, e in zip(fp, fe):
        lines.append(",".join(f"{float(v):.9g}" for v in list(p) + [e]))
    (fixdir / "expected_scores.csv").write_text("\n".join(lines) + "\n")
    print(f"wrote fixtures/expected_scores.csv ({len(fe)} rows)")


if __name__ == "__main__":
    main()
