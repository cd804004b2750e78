"""``autolabel run``: a whole pipeline in one run directory, resumable stage by stage."""

from __future__ import annotations

from pipelines.commands.base import Command, Invocation, open_run, print_metrics
from pipelines.definitions import PipelineConfig, get_pipeline, headline


def run(cfg: PipelineConfig, inv: Invocation) -> int:
    from autolabel.engine.dist import global_rank
    from autolabel.engine.io import write_json
    from pipelines.report import build_report
    from pipelines.runner import run_pipeline, validate_stages
    from pipelines.stages.select import WAITING_EXIT, AwaitingLabels

    pipeline = get_pipeline(cfg.pipeline)
    validate_stages(pipeline, cfg)  # every stage's settings, before a run directory exists
    if pipeline.validate is not None:
        pipeline.validate(cfg)  # missing or malformed data folders fail here too
    if cfg.run.name == "pipeline":
        cfg.run.name = cfg.pipeline
    rd = open_run(cfg, inv)
    try:
        results = run_pipeline(pipeline, cfg, rd, from_stage=cfg.from_stage, until_stage=cfg.until_stage)
    except AwaitingLabels as e:  # label_loop: a person labels the selected images, then reruns (not an error)
        if global_rank() == 0:
            report = build_report(rd.path)  # the selection's contact sheet is in it
            print(f"{e}\nrun directory: {rd.path}\nreport: {report}")
        return WAITING_EXIT
    if global_rank() != 0:  # DDP ranks > 0 trained along; rank 0 writes the summary and the report
        return 0
    summary = headline(results)
    summary["stages"] = {r.name: {"status": r.status, "seconds": round(r.seconds, 2)} for r in results}
    write_json(rd.path / "summary.json", summary)
    report = build_report(rd.path)
    print_metrics(f"{cfg.pipeline}: headline", {k: v for k, v in summary.items() if not isinstance(v, dict)})
    for name, m in summary.get("baselines", {}).items():
        print_metrics(f"baseline: {name}", m)
    print(f"run directory: {rd.path}\nreport: {report}")
    return 0


COMMANDS = (
    Command(
        "run",
        "run a pipeline end to end (default: the bundled demo) in one resumable run directory",
        PipelineConfig,
        run,
    ),
)
