"""Completion e-mails for upload-page jobs: one message with expiring result links."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from simpletasks.web import jobs as jobs_
from simpletasks.web.config import PipelineConfig
from simpletasks.web.db import Job
from simpletasks.web.links import LinkSigner
from simpletasks.web.mail import Mailer

logger = logging.getLogger(__name__)


class Notifier:
    """After each consumer batch: mail every finished upload job that has not been mailed.

    A job is mailed once all its tasks are final. A failed send is logged and tried again
    after the next batch (the job stays unmailed).
    """

    def __init__(
        self,
        mailer: Mailer,
        signer: LinkSigner,
        public_url: str,
        pipelines: Mapping[str, PipelineConfig],
        job_link_seconds: int,
    ) -> None:
        self.mailer = mailer
        self.signer = signer
        self.public_url = public_url.rstrip("/")
        self.pipelines = pipelines
        self.job_link_seconds = job_link_seconds

    def __call__(self, session: Session) -> None:
        """Mail the finished jobs (see the class docstring)."""
        if not self.mailer.enabled:
            return
        pending = session.scalars(
            select(Job).where(Job.email.is_not(None), Job.notified.is_(None))
        ).all()
        for job in pending:
            status = jobs_.status(session, job)
            if status["total"] == 0 or status["finished"] < status["total"]:
                continue
            try:
                self.mailer.send(job.email or "", *self.compose(session, job, status))
            except Exception as exc:
                logger.warning("cannot mail job %s to its submitter: %s", job.id, exc)
                continue
            job.notified = time.time()
            session.commit()

    def compose(self, session: Session, job: Job, status: dict) -> tuple[str, str]:
        """Return the subject and text of ``job``'s e-mail."""
        pipeline = self.pipelines.get(job.pipeline or "")
        seconds = pipeline.link_seconds if pipeline else self.job_link_seconds
        lines = [f"Your upload to {job.name} has been processed.", ""]
        c = status["counts"]
        lines.append(
            f"{c['succeeded']} succeeded, {c['failed']} failed, {c['cancelled']} cancelled."
        )
        lines.append("")
        outputs = []
        for report in session.scalars(jobs_.results_query(job.id)):
            for key in report.outputs or []:
                token = self.signer.result_token(job.id, key, seconds)
                outputs.append(f"{key.rsplit('/', 1)[-1]}: {self.public_url}/r/{token}")
        if outputs:
            from simpletasks.web.app import human_seconds

            lines.append(f"Results (links expire in {human_seconds(seconds)}):")
            lines.extend(outputs)
            lines.append("")
        page = self.signer.job_token(job.id, seconds)
        lines.append(f"Job page: {self.public_url}/jobs/{job.id}?t={page}")
        return f"Results ready: {job.name}", "\n".join(lines) + "\n"
