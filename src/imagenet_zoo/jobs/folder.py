"""The folder job on this machine (classify or extract), the twin of the Ray job in `cluster.py`.

Classify streams each result to a results file as it is produced (`--resume` skips what the file already
holds, if it was written with the same settings) and to the caller; extract writes one features file. A
photo that cannot be read is reported with its error and the job goes on. Everything a job is asked is
checked before any file is opened or any model loaded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagenet_zoo.api import Checked
from imagenet_zoo.classifier import Classifier, FeatureExtractor, PostPlan
from imagenet_zoo.data.images import find_images
from imagenet_zoo.errors import UsageError
from imagenet_zoo.jobs.annotate import AnnotationWriter
from imagenet_zoo.jobs.identity import Identity
from imagenet_zoo.jobs.job import JobOptions, JobReport
from imagenet_zoo.jobs.results import RecordsFile
from imagenet_zoo.progress import Progress
from imagenet_zoo.records import Classification, ErrorInfo, csv_columns, flat_row


@dataclass(frozen=True, kw_only=True)
class FolderJob(JobOptions):
    # classify: a results file (.csv, .jsonl, .json), or None to hand results to the caller alone;
    # extract: the features file (.npz, .parquet).
    output: Path | None = None
    resume: bool = False  # skip the photos already in `output`
    annotate: Path | None = None  # a labelled copy: this file for a one-photo job, else into this folder
    annotate_dir: Path | None = None  # a labelled copy of every photo, into this folder
    sheet: Path | None = None  # a contact sheet of labelled thumbnails
    overwrite: bool = False  # the results file and annotations may replace files (never an input photo)
    progress: bool | None = None  # a progress bar on stderr; None: when it is a terminal


def run_folder_job(job: FolderJob, *, on_result: Callable[[Classification], None] | None = None) -> JobReport:
    """Run the job; `on_result` receives each classification as it is produced, in input order."""
    job.check()  # refused before the folders are listed
    sources = find_images(job.sources, recursive=job.recursive)
    if not sources:
        raise UsageError("no image files found (use --recursive for sub-folders)")
    checked = job.check(photos=len(sources))
    if checked.plan is None:
        return _extract(job, checked.pipeline, sources)
    if job.resume and not job.output:
        raise UsageError("--resume needs --output")
    plan = checked.plan
    start = time.monotonic()
    annotations = _annotation_writer(job, sources)
    with contextlib.ExitStack() as stack:
        results = stack.enter_context(_results_file(job, plan, checked.identity)) if job.output else None
        todo = [s for s in sources if results is None or s not in results.done]
        classifier = checked.pipeline.load()
        assert isinstance(classifier, Classifier)
        progress = Progress("Classifying", len(todo), unit="img", enabled=job.progress)
        failures: list[tuple[str, ErrorInfo]] = []
        for result in classifier.run(todo, plan):
            if results is not None:
                record = result.to_dict()
                results.write_record(record)
            if on_result is not None:
                on_result(result)
            annotations.add(result)
            progress.update()
            if result.error is not None:
                failures.append((result.source, result.error))
        progress.close()
        annotations.finish()
    seconds = time.monotonic() - start
    return JobReport(
        len(sources), len(sources) - len(todo), len(todo), failures, seconds, checked.pipeline.choice
    )


def _results_file(job: FolderJob, plan: PostPlan, identity: Identity) -> RecordsFile:
    """The results file, its columns those of the job's top-k and groups, its settings recorded."""
    assert job.output is not None
    groups = len(plan.synsets) + (plan.top_groups[0] if plan.top_groups else 0)
    return RecordsFile(
        job.output,
        columns=csv_columns(plan.top, groups),
        resume=job.resume,
        overwrite=job.overwrite,
        identity=identity,
        flat=flat_row,
    )


def _annotation_writer(job: FolderJob, sources: list[str]) -> AnnotationWriter:
    """`annotate`: a file for one photo, a folder for several. `annotate_dir`: always a folder."""
    single = len(sources) == 1
    folder = job.annotate_dir or (job.annotate if not single else None)
    return AnnotationWriter(
        file=job.annotate if single else None, folder=folder, sheet=job.sheet, inputs=sources,
        overwrite=job.overwrite,
    )  # fmt: skip


def _extract(job: FolderJob, checked: Checked, sources: list[str]) -> JobReport:
    from imagenet_zoo.jobs.features import FORMATS, save_features

    if job.output is None or job.output.suffix.lower() not in FORMATS:
        raise UsageError(f"--output must end in one of {', '.join(FORMATS)}: {job.output}")
    start = time.monotonic()
    extractor = checked.load()
    assert isinstance(extractor, FeatureExtractor)
    progress = Progress("Extracting", len(sources), unit="img", enabled=job.progress)
    feature_set = extractor.extract(sources, on_item=lambda *_: progress.update())
    progress.close()
    save_features(feature_set, job.output)
    return JobReport(
        len(sources), 0, len(sources), feature_set.failures, time.monotonic() - start, checked.choice,
        feature_shape=feature_set.features.shape,
    )  # fmt: skip
