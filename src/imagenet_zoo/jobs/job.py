"""What every folder job is asked, on one machine (`folder.FolderJob`) or on Ray (`cluster.ClusterJob`),
and what it reports."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from imagenet_zoo.api import LoadPlan, check_config
from imagenet_zoo.classifier import PostPlan, plan_post
from imagenet_zoo.engines.registry import EngineChoice
from imagenet_zoo.jobs.identity import Identity, job_identity
from imagenet_zoo.pipeline import LoadConfig, PostOptions
from imagenet_zoo.records import ErrorInfo
from imagenet_zoo.specs import Task


@dataclass(frozen=True, kw_only=True)
class JobOptions:
    sources: list[str]  # files, folders or glob patterns (and, on a cluster, URLs)
    recursive: bool = False
    load: LoadConfig = field(default_factory=LoadConfig)  # task "features": extract
    post: PostOptions = field(default_factory=PostOptions)  # classify: what each record reports

    @property
    def task(self) -> Task:
        return self.load.task

    @property
    def load_config(self) -> LoadConfig:
        """The load configuration, with the engine's heatmaps when the records report them."""
        return replace(self.load, explain=self.load.explain or self.post.explains)

    def check(self, *, photos: int | None = None) -> JobPlan:
        """Everything the job is asked, checked before any file is opened or any model loaded; an `auto`
        engine is chosen for `photos` photos (None: many)."""
        load_plan = check_config(self.load_config, progress=False, photos=photos)
        load, model = load_plan.config, load_plan.model  # the engine and device chosen
        if self.task == "features":
            return JobPlan(load_plan, None, job_identity(self.task, load, model, None))
        post_plan = plan_post(model.spec, self.post)
        return JobPlan(load_plan, post_plan, job_identity(self.task, load, model, self.post))


@dataclass(frozen=True)
class JobPlan:
    """A job checked before any work: what to load (`load_plan.load()` loads the pipeline), what to
    report (classify), and the settings recorded beside its output."""

    load_plan: LoadPlan
    post_plan: PostPlan | None  # classify: the post configuration checked for the model
    identity: Identity  # the settings that change what the job writes


@dataclass(frozen=True)
class JobReport:
    """What a folder job did, on one machine or on a cluster."""

    listed: int  # photos found
    skipped: int  # already in the output (a resumed run)
    done: int  # photos processed in this run, failed ones included
    failures: list[tuple[str, ErrorInfo]] = field(default_factory=list)
    seconds: float = 0.0
    choice: EngineChoice | None = None  # the engine and device it ran on, and why
    feature_shape: tuple[int, ...] | None = None  # extract on one machine: (photos, dimensions)
