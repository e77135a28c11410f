"""The folder job on this machine (classify or extract), the twin of the Ray job in `cluster.py`.

Classify streams each result to a results file as it is produced (`--resume` skips what the file already
holds, if it was written with the same settings) and to the caller; extract streams each photo's features
to a journal the same way and writes the features file from it at the end (`features.py`). A photo that
cannot be read is reported with its error and the job goes on. Everything a job is asked is checked
before any file is opened or any model loaded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagenet_zoo.classifier import Classifier, FeatureExtractor, PostPlan
from imagenet_zoo.data.images import find_images
from imagenet_zoo.errors import UsageError
from imagenet_zoo.jobs.annotate import AnnotationWriter
from imagenet_zoo.jobs.identity import Identity, identity_file
from imagenet_zoo.jobs.job import JobOptions, JobPlan, JobReport
from imagenet_zoo.jobs.results import RecordsFile
from imagenet_zoo.progress import Progress
from imagenet_zoo.records import Classification, ErrorInfo, csv_columns, flat_row


@dataclass(frozen=True, kw_only=True)
class FolderJob(JobOptions):
    # classify: a results file (.csv, .jsonl, .json), or None to hand results to the caller alone;
    # extract: the features file (.npz, .parquet).
    output: Path | None = None
    resume: bool = False  # skip the photos already in `output` (extract: in its journal)
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
    job_plan = job.check(photos=len(sources))
    if job.resume and not job.output:
        raise UsageError("--resume needs --output")
    if job_plan.post_plan is None:
        return _extract(job, job_plan, sources)
    plan = job_plan.post_plan
    start = time.monotonic()
    annotations = _annotation_writer(job, sources)
    with contextlib.ExitStack() as stack:
        results = stack.enter_context(_results_file(job, plan, job_plan.identity)) if job.output else None
        todo = [s for s in sources if results is None or s not in results.done]
        classifier = job_plan.load_plan.load()
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
        len(sources), len(sources) - len(todo), len(todo), failures, seconds, job_plan.load_plan.choice
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
        file=job.annotate if single else None,
        folder=folder,
        sheet=job.sheet,
        inputs=sources,
        overwrite=job.overwrite,
    )


def _extract(job: FolderJob, job_plan: JobPlan, sources: list[str]) -> JobReport:
    """Features streamed to the output's journal (resumed with `--resume`), then the features file."""
    from imagenet_zoo.jobs.features import check_writable, journal_of, journal_record, write_features_file

    assert job.output is not None
    check_writable(job.output)
    journal = journal_of(job.output)
    if job.output.exists() and not journal.exists() and not job.overwrite:
        return _finished_features(job, sources, job_plan)
    start = time.monotonic()
    columns: list[str] = []  # JSON Lines: no columns
    with RecordsFile(
        journal,
        columns=columns,
        resume=job.resume,
        overwrite=job.overwrite,
        formats=(journal.suffix,),
        identity=job_plan.identity,
    ) as records:
        todo = [s for s in sources if s not in records.done]
        extractor = job_plan.load_plan.load()
        assert isinstance(extractor, FeatureExtractor)
        progress = Progress("Extracting", len(todo), unit="img", enabled=job.progress)
        failures: list[tuple[str, ErrorInfo]] = []
        for name, features, error in extractor.run(todo):
            records.write_record(journal_record(name, features, error))
            progress.update()
            if error is not None:
                failures.append((name, error))
        progress.close()
        shape = write_features_file(journal, job.output, extractor.spec.name)
    journal.unlink()
    identity_file(journal).unlink(missing_ok=True)
    return JobReport(
        len(sources),
        len(sources) - len(todo),
        len(todo),
        failures,
        time.monotonic() - start,
        job_plan.load_plan.choice,
        feature_shape=(shape.photos, shape.dimensions),
    )


def _finished_features(job: FolderJob, sources: list[str], job_plan: JobPlan) -> JobReport:
    """A features file a finished job wrote: with `--resume`, nothing left to do if it holds every photo;
    otherwise it is replaced only with `--overwrite`."""
    from imagenet_zoo.jobs.features import load_features
    from imagenet_zoo.records import parquet_text

    assert job.output is not None
    if not job.resume:
        raise UsageError(f"{job.output} exists: add --overwrite to replace it (or --resume to complete it)")
    held = load_features(job.output)
    names = {parquet_text(s) for s in sources} if job.output.suffix.lower() == ".parquet" else set(sources)
    missing = len(names - set(held.paths) - {path for path, _ in held.failures})
    if missing:
        raise UsageError(
            f"{job.output} is a finished job's, and {missing:,} of the photos are not in it: extract them "
            "into another file, or add --overwrite to extract everything again"
        )
    shape = (len(held.paths), held.features.shape[1] if held.features.ndim == 2 else 0)
    return JobReport(len(sources), len(sources), 0, [], 0.0, job_plan.load_plan.choice, feature_shape=shape)
