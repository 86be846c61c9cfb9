"""Training benchmarks for issue 6 (wsi-train).

epoch   ABMIL epoch time on B bags × N patches × D features (random fp16 bags in RAM), with
        the real MILClassifier and Lightning Trainer (one bag per step, CPU); the NCMI and CE
        epochs run in the same process, alternately (ce, ncmi, ncmi, ce, ...), and the
        ratios of the best epochs and of the median step times are reported.
steps   NCMI/CE step-time ratio with the two models interleaved step by step on the same bags
        (ce, ncmi, ncmi, ce, ...): the real MILClassifier forward, the injected loss, backward
        and an AdamW update, timed per step; host-load swings hit both losses alike.
memory  Peak memory of one forward + backward on a bag of N patches, per aggregator
        (each model in a fresh subprocess; peak RSS growth over the loaded bag).

    python tools/bench/train_speed.py epoch --bags 500 --patches 5000 --dim 1024
    python tools/bench/train_speed.py steps --bags 40 --steps 200 --patches 5000 --dim 1024
    python tools/bench/train_speed.py memory --patches 100000 --dim 1024
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def _bags(n_bags: int, n_patches: int, dim: int):
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.randn(n_patches, dim, generator=g).half() for _ in range(n_bags)], [
        i % 4 for i in range(n_bags)
    ]


def epoch(args: argparse.Namespace) -> dict[str, object]:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    from wsi_ncmi.mil import build_aggregator
    from wsi_ncmi.train.build import build_criterion
    from wsi_ncmi.train.module import MILClassifier

    torch.set_num_threads(args.threads)
    bags, labels = _bags(args.bags, args.patches, args.dim)

    class Bags(Dataset):
        def __len__(self) -> int:
            return len(bags)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {
                "features": bags[i],
                "target": torch.tensor(labels[i]),
                "index": torch.tensor(i),
            }

    def one_epoch(loss: str) -> float:
        L.seed_everything(0, verbose=False)
        criterion = build_criterion(loss, {}, num_classes=4, class_counts=[1] * 4, feature_dim=512)
        model = MILClassifier(build_aggregator("abmil", in_dim=args.dim, num_classes=4), criterion)
        trainer = L.Trainer(
            max_epochs=1,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        steps = _StepTimer()
        trainer.callbacks.append(steps)  # type: ignore[attr-defined]
        loader = DataLoader(Bags(), batch_size=1, shuffle=True)
        start = time.perf_counter()
        trainer.fit(model, loader)
        step_s[loss].extend(steps.seconds)
        return time.perf_counter() - start

    class _StepTimer(L.Callback):
        """Wall time of every optimiser step (forward, loss, backward, update)."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._t = 0.0

        def on_train_batch_start(self, *args: object) -> None:
            self._t = time.perf_counter()

        def on_train_batch_end(self, *args: object) -> None:
            self.seconds.append(time.perf_counter() - self._t)

    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"ce": [], "ncmi": []}
    step_s: dict[str, list[float]] = {"ce": [], "ncmi": []}
    for r in range(args.repeats):  # alternate the order: ce, ncmi, ncmi, ce, ...
        for loss in ("ce", "ncmi") if r % 2 == 0 else ("ncmi", "ce"):
            times[loss].append(one_epoch(loss))
    best = {k: min(v) for k, v in times.items()}
    median_ms = {k: 1000 * statistics.median(v) for k, v in step_s.items()}
    return {
        "bags": args.bags,
        "patches": args.patches,
        "dim": args.dim,
        "threads": args.threads,
        "epoch_s": times,
        "best_epoch_s": best,
        "ms_per_step_of_best_epoch": {k: 1000 * v / args.bags for k, v in best.items()},
        "median_step_ms": median_ms,
        "ncmi_over_ce_best_epoch": best["ncmi"] / best["ce"],
        "ncmi_over_ce_median_step": median_ms["ncmi"] / median_ms["ce"],
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
    }


def steps(args: argparse.Namespace) -> dict[str, object]:
    """Interleaved per-step timing of CE and NCMI (see the module docstring)."""
    import torch

    from wsi_ncmi.mil import build_aggregator
    from wsi_ncmi.train.build import build_criterion
    from wsi_ncmi.train.module import MILClassifier

    torch.set_num_threads(args.threads)
    bags, labels = _bags(args.bags, args.patches, args.dim)
    models, optims = {}, {}
    for loss in ("ce", "ncmi"):
        torch.manual_seed(0)
        criterion = build_criterion(loss, {}, num_classes=4, class_counts=[1] * 4, feature_dim=512)
        models[loss] = MILClassifier(
            build_aggregator("abmil", in_dim=args.dim, num_classes=4), criterion
        ).train()
        optims[loss] = torch.optim.AdamW(models[loss].parameters(), lr=1e-4, weight_decay=1e-4)

    def one_step(loss: str, i: int) -> float:
        model, opt = models[loss], optims[loss]
        start = time.perf_counter()
        output = model(bags[i % len(bags)].float().unsqueeze(0))
        result = model.criterion(model._loss_outputs(output), torch.tensor([labels[i % 4]]))
        opt.zero_grad(set_to_none=True)
        result.loss.backward()
        opt.step()
        return time.perf_counter() - start

    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"ce": [], "ncmi": []}
    for i in range(args.steps):
        for loss in ("ce", "ncmi") if i % 2 == 0 else ("ncmi", "ce"):
            times[loss].append(one_step(loss, i))
    median_ms = {k: 1000 * statistics.median(v[2:]) for k, v in times.items()}  # 2 warm-up
    ratios = [b / a for a, b in zip(times["ce"][2:], times["ncmi"][2:], strict=True)]
    return {
        "bags": args.bags,
        "steps_per_loss": args.steps,
        "patches": args.patches,
        "dim": args.dim,
        "threads": args.threads,
        "median_step_ms": median_ms,
        "ncmi_over_ce_median_step": median_ms["ncmi"] / median_ms["ce"],
        "median_of_paired_ratios": statistics.median(ratios),
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
    }


def _peak_one(name: str, patches: int, dim: int) -> dict[str, object]:
    import torch

    from wsi_ncmi.mil import build_aggregator

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_aggregator(name, in_dim=dim, num_classes=4)
    bag = torch.randn(1, patches, dim).half()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = model(bag.float())
    out.logits.sum().backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model": name,
        "peak_growth_mib": (peak - base) / 1024,
        "peak_rss_mib": peak / 1024,
        "fwd_bwd_s": seconds,
    }


def memory(args: argparse.Namespace) -> list[dict[str, object]]:
    from wsi_ncmi.mil import list_aggregators

    results = []
    for name in args.models or list_aggregators():
        cmd = [sys.executable, __file__, "_one", name, str(args.patches), str(args.dim)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    return results


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        print(json.dumps(_peak_one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return 0
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("epoch")
    e.add_argument("--bags", type=int, default=500)
    e.add_argument("--patches", type=int, default=5000)
    e.add_argument("--dim", type=int, default=1024)
    e.add_argument("--repeats", type=int, default=2)
    e.add_argument("--threads", type=int, default=2)
    t = sub.add_parser("steps")
    t.add_argument("--bags", type=int, default=40)
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--patches", type=int, default=5000)
    t.add_argument("--dim", type=int, default=1024)
    t.add_argument("--threads", type=int, default=1)
    m = sub.add_parser("memory")
    m.add_argument("--patches", type=int, default=100_000)
    m.add_argument("--dim", type=int, default=1024)
    m.add_argument("--models", nargs="*")
    args = p.parse_args()
    result = {"epoch": epoch, "steps": steps, "memory": memory}[args.cmd](args)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
