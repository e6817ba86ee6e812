"""``ssp_train pipeline``: every stage of the paper's table in order, then one merged table.

Usage::

    ssp_train pipeline --data uavid=datasets/uavid --data ruralscapes=datasets/ruralscapes \
        --out runs/paper [--seeds 0 1 2] [--set run.device=cuda ...]
    ssp_train pipeline --profile tiny --data synth=datasets/synth_tiny --out runs/tiny   # CI

Stages, per dataset and seed (docs/TRAINING.md explains what each consumes and produces):
image → teacher → teacher_logits (export) → ssp → kd_image → kd_ssp → dff → netwarp →
tcb_ppm → tcb_ocr → the ablations and the λ sweep (UAVid only, as in the paper) →
eval (``ssp_eval`` on every artifact of the dataset and seed) → merged table.

Recipes: the ``paper`` profile runs ``configs/<stage>_<dataset>.yaml`` (datasets ``uavid``
and ``ruralscapes``; ablations ``ssp_<dataset>_<ablation>.yaml``); the ``tiny`` profile runs
``configs/synth_tiny_pipe_<stage>.yaml`` on any dataset name. The pipeline sets only
``data.root``, ``run.out_dir``, ``run.seed``, ``model.init`` (the image stage's artifact) and
``data.teacher_logits``; ``--set`` adds overrides for every run. The teacher is trained once
(first seed); KD stages of every seed read its logits.

Resumable stage by stage: a finished run (``summary.json``) is skipped, an interrupted one is
resumed from its checkpoint, the export resumes per frame, and an evaluation whose report
lists the same artifacts is not repeated. Outputs: ``<out>/<dataset>/<stage>/seed<s>/`` (run
folders), ``<out>/<dataset>/eval/seed<s>/<H>x<W>/`` (ssp_eval reports; one per input size,
since the teacher runs at its own), ``<out>/table.md``, ``<out>/table.json`` and
``<out>/plots/``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import os
from pathlib import Path
import re
import time
from typing import Any, Callable

from ssp_perception.artifact import read_meta
from ssp_perception.files import atomic_write_json, atomic_write_text

from .data.files import make_folder
from .eval.plots import plot_lambda_sweep, plot_merged
from .eval.report import read_report
from .eval.tables import merged_table, MergedRow
from .recipes import CONFIG_DIR, load_recipe, RecipeError

PROFILES = ("paper", "tiny")
PAPER_DATASETS = ("uavid", "ruralscapes")


@dataclass(frozen=True)
class Stage:
    """One row-producing step of the pipeline."""

    name: str
    """Stage name; also the recipe's stem pattern (see :func:`recipe_path`)."""
    row: str
    """Row of the merged table ("" for the export, which makes no row)."""
    init: bool = False
    """Start from the image stage's artifact (``model.init``)."""
    teacher: bool = False
    """Read the exported teacher logits (``data.teacher_logits``)."""
    ablation: bool = False
    """Run on the first dataset only (the paper's ablations and λ sweep are UAVid's)."""
    lam: float | None = None
    """TC-loss weight λ of an SSP row, for the λ-sweep plot."""


STAGES = (
    Stage("teacher", "Teacher (Hiera-B+)"),
    Stage("teacher_logits", ""),
    Stage("image", "Base Image Model"),
    Stage("kd_image", "KD Base Image Model", teacher=True),
    Stage("dff", "DFF", init=True),
    Stage("netwarp", "NetWarp", init=True),
    Stage("tcb_ppm", "TCB-PPM", init=True),
    Stage("tcb_ocr", "TCB-OCR", init=True),
    Stage("ssp", "SSP", init=True, lam=0.5),
    Stage("kd_ssp", "KD-SSP", init=True, teacher=True),
    Stage("ssp_ablation_consistencyloss", "SSP, no consistency loss (λ = 0)", init=True,
          ablation=True, lam=0.0),
    Stage("ssp_lambda_0.2", "SSP, λ = 0.2", init=True, ablation=True, lam=0.2),
    Stage("ssp_lambda_0.35", "SSP, λ = 0.35", init=True, ablation=True, lam=0.35),
    Stage("ssp_lambda_0.65", "SSP, λ = 0.65", init=True, ablation=True, lam=0.65),
    Stage("ssp_ablation_cossim", "SSP, cosine similarity", init=True, ablation=True),
    Stage("ssp_ablation_interpolation", "SSP, no interpolation (s = 0)", init=True,
          ablation=True),
    Stage("ssp_ablation_registration", "SSP, no registration", init=True, ablation=True),
    Stage("ssp_ablation_untrainedimage", "SSP, from the untrained image model",
          ablation=True),
)
# Training order: what a stage reads is made by an earlier stage.
ORDER = ("image", "teacher", "teacher_logits", "ssp", "kd_image", "kd_ssp", "dff", "netwarp",
         "tcb_ppm", "tcb_ocr", "ssp_ablation_consistencyloss", "ssp_ablation_cossim",
         "ssp_ablation_interpolation", "ssp_ablation_registration",
         "ssp_ablation_untrainedimage", "ssp_lambda_0.2", "ssp_lambda_0.35", "ssp_lambda_0.65")
STAGE_BY_NAME = {s.name: s for s in STAGES}


class PipelineError(ValueError):
    """The pipeline's inputs do not fit together; the message says what to change."""


@dataclass(frozen=True)
class Plan:
    """What to run: profile, datasets (name -> root), seeds, output folder, extra settings."""

    profile: str
    datasets: dict[str, Path]
    seeds: tuple[int, ...]
    out: Path
    overrides: tuple[str, ...] = ()
    stages: tuple[str, ...] = ORDER
    eval_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise PipelineError(f"--profile must be one of {PROFILES}, got {self.profile!r}")
        if not self.datasets:
            raise PipelineError("give at least one --data NAME=ROOT")
        if self.profile == "paper":
            bad = sorted(set(self.datasets) - set(PAPER_DATASETS))
            if bad:
                raise PipelineError(f"the paper profile has recipes for {PAPER_DATASETS}, not "
                                    f"{bad}; name the datasets uavid=... ruralscapes=...")
        unknown = sorted(set(self.stages) - set(ORDER))
        if unknown:
            raise PipelineError(f"unknown stage(s) {unknown}; stages: {', '.join(ORDER)}")
        if not self.seeds:
            raise PipelineError("give at least one seed")

    def runs_on(self, stage: Stage, dataset: str) -> bool:
        """Return whether ``stage`` runs on ``dataset``.

        Ablations run on UAVid only in the paper profile (the paper's, and the only recipes),
        on the first dataset in the tiny one.
        """
        if stage.name not in self.stages:
            return False
        if not stage.ablation:
            return True
        return dataset == ("uavid" if self.profile == "paper" else next(iter(self.datasets)))

    def run_dir(self, dataset: str, stage: str, seed: int) -> Path:
        """Return the run folder of ``stage`` (the teacher's is its first seed's)."""
        if stage in ("teacher", "teacher_logits"):
            seed = self.seeds[0]
        return self.out / dataset / stage / f"seed{seed}"

    def logits_dir(self, dataset: str) -> Path:
        """Return the folder of the exported teacher logits."""
        return self.run_dir(dataset, "teacher", self.seeds[0]) / "train_logits"


def recipe_path(profile: str, stage: str, dataset: str) -> Path:
    """Return the recipe file of ``stage`` on ``dataset`` in ``profile``."""
    if profile == "tiny":
        return CONFIG_DIR / f"synth_tiny_pipe_{stage}.yaml"
    if stage.startswith("ssp_"):
        return CONFIG_DIR / f"ssp_{dataset}_{stage[len('ssp_'):]}.yaml"
    return CONFIG_DIR / f"{stage}_{dataset}.yaml"


def stage_overrides(plan: Plan, stage: Stage, dataset: str, seed: int) -> list[str]:
    """Return the overrides the pipeline gives one training run (then the user's ``--set``)."""
    out = [f"data.root={plan.datasets[dataset]}",
           f"run.out_dir={plan.run_dir(dataset, stage.name, seed)}", f"run.seed={seed}"]
    if stage.init:
        out.append(f"model.init={plan.run_dir(dataset, 'image', seed) / 'model.safetensors'}")
    if stage.teacher:
        out.append(f"data.teacher_logits={plan.logits_dir(dataset)}")
    return out + list(plan.overrides)


def _log(msg: str) -> None:
    print(f"[pipeline] {msg}", flush=True)


def check_recipes(plan: Plan) -> None:
    """Load every recipe the plan will train (with its overrides); report all problems at once."""
    problems = []
    for dataset in plan.datasets:
        for stage in STAGES:
            if stage.name == "teacher_logits" or not plan.runs_on(stage, dataset):
                continue
            path = recipe_path(plan.profile, stage.name, dataset)
            try:
                load_recipe(path, stage_overrides(plan, stage, dataset, plan.seeds[0]))
            except RecipeError as err:
                problems.append(f"{path.name}: {err}")
    if problems:
        raise PipelineError(f"{len(problems)} recipe problem(s):\n  - " + "\n  - ".join(problems))


FitFn = Callable[[str, list[str], bool], dict[str, Any]]


def run_fit(plan: Plan, stage: Stage, dataset: str, seed: int, fit: FitFn) -> None:
    """Train one stage with ``fit`` unless its run finished; resume it when it was interrupted.

    ``fit`` is ``ssp_training.train.fit``, handed in by the ``ssp_train`` CLI that owns this
    command (train.py imports this module, so importing it back would be a cycle).
    """
    run_dir = plan.run_dir(dataset, stage.name, seed)
    if (run_dir / "summary.json").is_file() and (run_dir / "model.safetensors").is_file():
        _log(f"{dataset} {stage.name} seed {seed}: done ({run_dir})")
        return
    resume = (run_dir / "recipe.yaml").is_file()
    _log(f"{dataset} {stage.name} seed {seed}: {'resuming' if resume else 'training'} "
         f"-> {run_dir}")
    fit(str(recipe_path(plan.profile, stage.name, dataset)),
        stage_overrides(plan, stage, dataset, seed), resume=resume)


def run_export(plan: Plan, dataset: str) -> None:
    """Export the teacher's logits of every training frame (resumes per frame)."""
    from .logits import export_logits, read_manifest
    folder = plan.logits_dir(dataset)
    try:
        if all(c["done"] for c in read_manifest(folder)["clips"].values()):
            _log(f"{dataset} teacher_logits: done ({folder})")
            return
    except (FileNotFoundError, ValueError):
        pass
    teacher = plan.run_dir(dataset, "teacher", plan.seeds[0]) / "model.safetensors"
    device = next((o.split("=", 1)[1] for o in plan.overrides if o.startswith("run.device=")),
                  "auto")
    _log(f"{dataset} teacher_logits: exporting -> {folder}")
    export_logits(teacher, plan.datasets[dataset], folder, device=device, progress=False)


def _eval_groups(plan: Plan, dataset: str, seed: int) -> dict[tuple[int, int], list[Stage]]:
    """Return the seed's row stages grouped by their artifact's input size."""
    groups: dict[tuple[int, int], list[Stage]] = {}
    for stage in STAGES:
        if not stage.row or not plan.runs_on(stage, dataset):
            continue
        model = plan.run_dir(dataset, stage.name, seed) / "model.safetensors"
        if not model.is_file():
            raise PipelineError(f"{model} is missing: stage {stage.name} has not run (run the "
                                "pipeline without --stages, or with that stage)")
        size = tuple(read_meta(model).input_size)
        groups.setdefault((int(size[0]), int(size[1])), []).append(stage)
    return groups


def eval_dir(plan: Plan, dataset: str, seed: int, size: tuple[int, int]) -> Path:
    """Return the ssp_eval output folder of one dataset, seed and input size."""
    return plan.out / dataset / "eval" / f"seed{seed}" / f"{size[0]}x{size[1]}"


def eval_arguments(plan: Plan, dataset: str) -> list[str]:
    """Return the extra ssp_eval arguments: ``--eval-args``, plus the recipes' RAFT weights.

    Real data has no ground-truth flow and the paper's TC uses RAFT, so unless ``--eval-args``
    chooses the flow, the TC flow weights are the SSP recipe's validation flow weights.
    """
    args = list(plan.eval_args)
    if not {"--flow", "--flow-weights"} & set(args):
        val = load_recipe(recipe_path(plan.profile, "ssp", dataset),
                          stage_overrides(plan, STAGE_BY_NAME["ssp"], dataset, plan.seeds[0])).val
        if val.flow == "raft" and val.flow_weights:
            args += ["--flow-weights", val.flow_weights]
    device = next((o.split("=", 1)[1] for o in plan.overrides if o.startswith("run.device=")),
                  "")
    if device and "--device" not in args:
        args += ["--device", device]
    return args


def run_eval(plan: Plan, dataset: str, seed: int) -> list[Path]:
    """Evaluate every artifact of ``dataset`` and ``seed``; return the report paths."""
    from .evaluate import main as eval_main
    reports = []
    for size, stages in _eval_groups(plan, dataset, seed).items():
        if seed != plan.seeds[0]:
            stages = [s for s in stages if s.name != "teacher"]  # trained once
            if not stages:
                continue
        out = eval_dir(plan, dataset, seed, size)
        models = [str(plan.run_dir(dataset, s.name, seed) / "model.safetensors") for s in stages]
        report = out / "eval.json"
        if report.is_file() and [r.checkpoint for r in read_report(report)[0]] == models:
            _log(f"{dataset} eval seed {seed} {size[0]}x{size[1]}: done ({report})")
            reports.append(report)
            continue
        _log(f"{dataset} eval seed {seed} {size[0]}x{size[1]}: {len(models)} models -> {out}")
        rc = eval_main(["--checkpoint", *models, "--names", *[s.row for s in stages],
                        "--data", str(plan.datasets[dataset]), "--out", str(out),
                        "--no-progress", *eval_arguments(plan, dataset)])
        if rc != 0:
            raise PipelineError(f"ssp_eval failed for {dataset} seed {seed} (exit {rc}); its "
                                "message is above")
        reports.append(report)
    return reports


def merge(plan: Plan) -> list[MergedRow]:
    """Return the merged rows (paper order) from every dataset's and seed's reports."""
    rows = {s.row: MergedRow(name=s.row, lam=s.lam) for s in STAGES if s.row}
    for dataset in plan.datasets:
        for report in sorted((plan.out / dataset / "eval").glob("seed*/*/eval.json")):
            if int(report.parent.parent.name[len("seed"):]) not in plan.seeds:
                continue
            for result in read_report(report)[0]:
                if result.name in rows:
                    rows[result.name].add(dataset, result)
    return [r for r in rows.values() if r.scores]


def write_merged(plan: Plan, rows: list[MergedRow]) -> Path:
    """Write ``table.md``, ``table.json`` and the plots; return the table's path."""
    datasets = list(plan.datasets)
    table = merged_table(rows, datasets)
    path = atomic_write_text(plan.out / "table.md", table)
    atomic_write_json(plan.out / "table.json",
                      {"datasets": {k: str(v) for k, v in plan.datasets.items()},
                       "seeds": list(plan.seeds), "profile": plan.profile,
                       "units": "mIoU and TC in %, GFLOPs per frame",
                       "rows": [r.to_json() for r in rows]}, sort_keys=False)
    plot_merged(rows, datasets, plan.out / "plots" / "accuracy_vs_consistency.png")
    if any(r.lam is not None for r in rows):
        plot_lambda_sweep(rows, datasets[0], plan.out / "plots" / "lambda_sweep.png")
    print(table, end="", flush=True)
    return path


def run_pipeline(plan: Plan, fit: FitFn) -> Path:
    """Run every planned stage in order, evaluate, merge; return the merged table's path."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PipelineError("run the pipeline in one process; train a heavy stage with "
                            "torchrun into its run folder and re-run the pipeline "
                            "(docs/TRAINING.md, 'Several GPUs')")
    t0 = time.perf_counter()
    check_recipes(plan)
    make_folder(plan.out, "--out")
    for dataset in plan.datasets:
        for seed in plan.seeds:
            for name in ORDER:
                stage = STAGE_BY_NAME[name]
                if not plan.runs_on(stage, dataset):
                    continue
                if name in ("teacher", "teacher_logits") and seed != plan.seeds[0]:
                    continue
                if name == "teacher_logits":
                    run_export(plan, dataset)
                else:
                    run_fit(plan, stage, dataset, seed, fit)
            run_eval(plan, dataset, seed)
    path = write_merged(plan, merge(plan))
    _log(f"merged table {path} ({time.perf_counter() - t0:.0f} s)")
    return path


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")


def _dataset_arg(text: str) -> tuple[str, Path]:
    name, sep, root = text.partition("=")
    if not sep or not name or not root:
        raise argparse.ArgumentTypeError(f"--data must look like NAME=ROOT (e.g. "
                                         f"uavid=datasets/uavid), got {text!r}")
    if not _PLAIN_NAME.fullmatch(name):
        # NAME is the folder <out>/<NAME>/ of that dataset's runs: never a path out of --out.
        raise argparse.ArgumentTypeError(f"NAME must be a plain folder name (letters, digits, "
                                         f"_ - + and inner dots; runs go to <out>/NAME/), got "
                                         f"{name!r} in {text!r}")
    return name, Path(root)


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``pipeline`` options to ``p``."""
    p.add_argument("--data", action="append", type=_dataset_arg, required=True,
                   metavar="NAME=ROOT",
                   help="a dataset column, e.g. uavid=datasets/uavid (repeat for more)")
    p.add_argument("--out", required=True, help="output folder (re-running resumes it)")
    p.add_argument("--profile", choices=PROFILES, default="paper",
                   help="paper recipes, or the tiny synthetic ones (CI)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="training seeds; the table gives mean ± std when several")
    p.add_argument("--stages", nargs="+", default=list(ORDER), metavar="STAGE",
                   help=f"stages to train (default all): {', '.join(ORDER)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override for every run, e.g. run.device=cuda")
    p.add_argument("--eval-args", default="",
                   help="extra ssp_eval arguments as one string: --eval-args='--flow dis'")


def pipeline_from_args(args: argparse.Namespace, fit: FitFn) -> Path:
    """Run :func:`run_pipeline` from parsed ``pipeline`` arguments."""
    names = [n for n, _ in args.data]
    if len(set(names)) != len(names):
        raise PipelineError(f"--data names must differ, got {names}")
    plan = Plan(profile=args.profile, datasets=dict(args.data), seeds=tuple(args.seeds),
                out=Path(args.out), overrides=tuple(args.set), stages=tuple(args.stages),
                eval_args=tuple(args.eval_args.split()))
    return run_pipeline(plan, fit)
