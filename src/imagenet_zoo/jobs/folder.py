"""The folder job on this machine (classify or extract), the twin of the Ray job in `cluster.py`.

Classify streams each result to a results file as it is produced (`--resume` skips what the file already
holds) and to the caller; extract writes one features file. A photo that cannot be read is reported with
its error and the job goes on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagenet_zoo.api import load
from imagenet_zoo.classifier import Classification, ErrorInfo
from imagenet_zoo.data.images import find_images
from imagenet_zoo.errors import UsageError
from imagenet_zoo.jobs.annotate import AnnotationWriter
from imagenet_zoo.jobs.results import JobOptions, JobReport, ResultsFile
from imagenet_zoo.progress import Progress


@dataclass(frozen=True, kw_only=True)
class FolderJob(JobOptions):
    # classify: a results file (.csv, .jsonl, .json), or None to hand results to the caller alone;
    # extract: the features file (.npz, .parquet).
    output: Path | None = None
    batch_size: int = 8
    workers: int | None = None  # decoding threads (default: one per core)
    resume: bool = False  # skip the photos already in `output`
    annotate: Path | None = None  # a labelled copy: this file for a one-photo job, else into this folder
    annotate_dir: Path | None = None  # a labelled copy of every photo, into this folder
    sheet: Path | None = None  # a contact sheet of labelled thumbnails
    progress: bool | None = None  # a progress bar on stderr; None: when it is a terminal
    groups: tuple[str, ...] = ()  # WordNet groups whose probability each result reports ("dog", "bird")
    top_groups: tuple[int, int] | None = None  # (k, depth): the k most likely groups at that depth
    explain: bool = False  # a heatmap of the evidence for the top-1 class (or `explain_class`)
    explain_class: str | None = None  # index, synset id or label of the class to explain


def run_folder_job(job: FolderJob, *, on_result: Callable[[Classification], None] | None = None) -> JobReport:
    """Run the job; `on_result` receives each classification as it is produced, in input order."""
    sources = find_images(job.sources, recursive=job.recursive)
    if not sources:
        raise UsageError("no image files found (use --recursive for sub-folders)")
    if job.task == "extract":
        return _extract(job, sources)
    if job.resume and not job.output:
        raise UsageError("--resume needs --output")
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        results = (
            stack.enter_context(ResultsFile(job.output, top=job.top, resume=job.resume))
            if job.output
            else None
        )
        todo = [s for s in sources if results is None or s not in results.done]
        annotations = _annotation_writer(job, single=len(sources) == 1)
        classifier = load(
            job.model, engine=job.engine, precision=job.precision, resize=job.resize,
            batch_size=job.batch_size, workers=job.workers, decode=job.decode,
            explain=job.explain or job.explain_class is not None,
        )  # fmt: skip
        progress = Progress("Classifying", len(todo), unit="img", enabled=job.progress)
        failures: list[tuple[str, ErrorInfo]] = []
        for result in classifier.iter_classify(
            todo, top=job.top, groups=job.groups, top_groups=job.top_groups, explain=job.explain,
            explain_class=job.explain_class,
        ):  # fmt: skip
            if results is not None:
                results.write(result)
            if on_result is not None:
                on_result(result)
            annotations.add(result)
            progress.update()
            if result.error is not None:
                failures.append((result.source, result.error))
        progress.close()
        annotations.finish()
    return JobReport(len(sources), len(sources) - len(todo), len(todo), failures, time.monotonic() - start)


def _annotation_writer(job: FolderJob, *, single: bool) -> AnnotationWriter:
    """`annotate`: a file for one photo, a folder for several. `annotate_dir`: always a folder."""
    folder = job.annotate_dir or (job.annotate if not single else None)
    return AnnotationWriter(file=job.annotate if single else None, folder=folder, sheet=job.sheet)


def _extract(job: FolderJob, sources: list[str]) -> JobReport:
    from imagenet_zoo.transfer.features import FORMATS, save_features

    if job.output is None or job.output.suffix.lower() not in FORMATS:
        raise UsageError(f"--output must end in one of {', '.join(FORMATS)}: {job.output}")
    start = time.monotonic()
    extractor = load(
        job.model, engine=job.engine, precision=job.precision, resize=job.resize, batch_size=job.batch_size,
        workers=job.workers, decode=job.decode, features=True,
    )  # fmt: skip
    progress = Progress("Extracting", len(sources), unit="img", enabled=job.progress)
    feature_set = extractor.extract(sources, on_item=lambda *_: progress.update())
    progress.close()
    save_features(feature_set, job.output)
    return JobReport(
        len(sources), 0, len(sources), feature_set.failures, time.monotonic() - start,
        feature_shape=feature_set.features.shape,
    )  # fmt: skip
