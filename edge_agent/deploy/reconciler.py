"""The reconciler: judge each desired-state document, then run its deployment through the machine.

Admission (`admission.py`) checks a document before anything on the device may change; a failed
check is a REJECTED event with its code. A document seen before is ignored quietly (retained
messages and polls repeat themselves). Of several waiting documents only the newest is deployed.

A deployment then walks the steps of `machine.TRANSITIONS`, one handler per step. The journal is
written before each step, so after a crash `resume()` re-enters the step it was in. A journal that
cannot be written (a full disk, the state reserve spent) fails the step with DISK_FULL before it runs.

A registry that cannot be reached (at ACCEPTED or DOWNLOADING) is transient: DEFERRED, then the step
again with backoff, `policy.max_attempts` times. A deployment that still fails that way is not marked
handled and does not count as applied, so the same document is tried again when it comes back.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from edge_agent import memory
from edge_agent.activation import Activator, Candidate
from edge_agent.adapters import check_bases
from edge_agent.bundle_check import (
    MANIFEST,
    SIGNATURE,
    check_file,
    verify_manifest_bytes,
)
from edge_agent.config import AgentConfig
from edge_agent.contracts import (
    BenchRecord,
    BundleManifest,
    DeploymentState,
    DesiredState,
    ErrorCode,
    Event,
    EventError,
    FileEntry,
    Progress,
)
from edge_agent.deploy import atomic
from edge_agent.deploy.admission import Admitted, Rejected, admit_document
from edge_agent.deploy.download import Downloader, FileJob, bytes_on_disk, file_url
from edge_agent.deploy.journal import Journal, JournalRecord, Ledger
from edge_agent.deploy.machine import (
    ANNOUNCE,
    CRASH_CODE,
    TERMINAL,
    Interrupted,
    Outcome,
    Step,
    final_state,
    next_step,
)
from edge_agent.deploy.reuse import LocalFiles
from edge_agent.deploy.store import Store
from edge_agent.errors import (
    BundleError,
    ChecksumMismatchError,
    ContractError,
    DeployError,
    DiskFullError,
    DownloadError,
    HealthCheckError,
    IncompatibleError,
    MemoryInsufficientError,
    ModelRuntimeError,
    ProviderUnavailableError,
    SignatureError,
    SlmopsError,
)
from edge_agent.hashing import sha256_bytes
from edge_agent.http_client import OnDemandClient
from edge_agent.providers.selection import choose_variant
from edge_agent.reporting import Reporter, error_of
from edge_agent.signing import TrustedKeys

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

MAX_MANIFEST = 4 << 20
MAX_SIGNATURE = 64 << 10
PROGRESS_EVERY_S = 1.0
MB = 1 << 20

# Typed errors -> event codes, most specific first. One table, so every step reports alike.
ERROR_CODES: list[tuple[type[BaseException], ErrorCode]] = [
    (DiskFullError, ErrorCode.DISK_FULL),
    (DownloadError, ErrorCode.DOWNLOAD_FAILED),
    (MemoryInsufficientError, ErrorCode.MEMORY_INSUFFICIENT),
    (SignatureError, ErrorCode.SIGNATURE_INVALID),
    (BundleError, ErrorCode.CHECKSUM_MISMATCH),
    (ContractError, ErrorCode.INCOMPATIBLE),
    (IncompatibleError, ErrorCode.INCOMPATIBLE),
    (ProviderUnavailableError, ErrorCode.EP_UNAVAILABLE),
    (HealthCheckError, ErrorCode.HEALTH_CHECK_FAILED),
    (ModelRuntimeError, ErrorCode.HEALTH_CHECK_FAILED),
]
# Failures the handlers may raise; anything else is a bug and stops the agent loudly.
EXPECTED = (SlmopsError, OSError)
# Versions failing with these codes are blocked on this device: retrying cannot help.
BLOCKING_CODES = {ErrorCode.HEALTH_CHECK_FAILED, ErrorCode.EP_UNAVAILABLE}


def code_of(exc: BaseException, step: Step) -> ErrorCode:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ErrorCode.DISK_FULL
    for kind, code in ERROR_CODES:
        if isinstance(exc, kind):
            return code
    return CRASH_CODE[step]


class Reconciler:
    def __init__(
        self,
        config: AgentConfig,
        store: Store,
        journal: Journal,
        ledger: Ledger,
        reporter: Reporter,
        activator: Activator,
        trusted: TrustedKeys,
        stop: threading.Event | None = None,
        http: httpx.Client | OnDemandClient | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.journal = journal
        self.ledger = ledger
        self.reporter = reporter
        self.activator = activator
        self.trusted = trusted
        self.stop = stop or threading.Event()
        self.http = http or OnDemandClient(timeout=config.limits.download_timeout_s, follow_redirects=True)
        lim = config.limits
        self.downloader = Downloader(
            self.http, lim.download_retries, lim.backoff_initial_s, lim.backoff_max_s, self.stop
        )
        self.local = LocalFiles(store)  # files the device holds, staged by sha256 instead of fetched
        self.inbox: queue.Queue[tuple[bytes, str]] = queue.Queue()
        self.idle = threading.Event()  # set while nothing is queued or running (tests and bench wait on it)
        self._candidate: Candidate | None = None
        self.served: str | None = None  # ref the activator serves, when it serves at all
        self._bench: BenchRecord | None = None  # post-install bench, published once SUCCEEDED
        self._pauses = _test_pauses()
        self.handlers: dict[Step, Callable[[JournalRecord], Outcome]] = {
            Step.ACCEPTED: self._accepted,
            Step.DOWNLOADING: self._downloading,
            Step.VERIFYING: self._verifying,
            Step.INSTALLING: self._installing,
            Step.HEALTH_CHECK: self._health_check,
            Step.ACTIVATING: self._activating,
            Step.ROLLING_BACK: self._rolling_back,
        }

    # -- intake --------------------------------------------------------------------------------

    def submit(self, payload: bytes, source: str) -> None:
        """Called by transports on their own threads."""
        self.idle.clear()
        self.inbox.put((payload, source))

    def run(self) -> None:
        """Resume what a crash interrupted, then handle documents until `stop` is set."""
        self.resume()
        while not self.stop.is_set():
            try:
                first = self.inbox.get(timeout=0.2)
            except queue.Empty:
                self.idle.set()
                continue
            batch = [first]
            while True:
                try:
                    batch.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            self.handle(batch)

    def handle(self, batch: list[tuple[bytes, str]]) -> None:
        """Admit each document; deploy only the newest that passed, reject the others as superseded."""
        admitted: list[Admitted] = []
        for payload, source in batch:
            try:
                doc = self.admit(payload, source)
            except Rejected as rej:
                self._reject(rej, sha256_bytes(payload))
                continue
            if doc and all(doc.digest != a.digest for a in admitted):
                admitted.append(doc)
        if not admitted:
            return
        admitted.sort(key=lambda a: a.desired.revision)
        best = admitted[-1]
        for older in admitted[:-1]:
            detail = f"revision {older.desired.revision} superseded by {best.desired.revision}"
            rej = Rejected(
                ErrorCode.STALE_REVISION, detail, older.desired.deployment_id, older.desired.revision
            )
            self._reject(rej, older.digest)
        self.deploy(best)

    def last_revision(self) -> int:
        rec = self.journal.load()
        return max(self.ledger.data.applied_revision or 0, rec.revision if rec else 0)

    def admit(self, payload: bytes, source: str) -> Admitted | None:
        digest = sha256_bytes(payload)
        active = self.journal.load()
        if self.ledger.was_handled(digest) or (active and active.desired_sha256 == digest):
            log.debug("document from %s seen before; ignored", source)
            return None
        return admit_document(payload, source, self.trusted, self.last_revision(), self.ledger.data.blocked)

    def _reject(self, rej: Rejected, digest: str) -> None:
        self.ledger.mark_handled(digest)
        seq = self.ledger.take_seq(rej.deployment_id)
        self.ledger.save()  # on a full disk it stays in memory; the event goes out all the same
        self.reporter.event(
            Event(
                device=self.config.device_id,
                deployment_id=rej.deployment_id,
                seq=seq,
                state=DeploymentState.REJECTED,
                revision=rej.revision,
                error=error_of(rej.code, rej.detail),
            )
        )

    # -- running a deployment ------------------------------------------------------------------

    def deploy(self, doc: Admitted) -> None:
        d = doc.desired
        cur = self.store.current()
        rec = JournalRecord(
            deployment_id=d.deployment_id,
            revision=d.revision,
            desired=doc.document,
            desired_sha256=doc.digest,
            bundle=d.bundle.ref,
            manifest_sha256=d.bundle.manifest_sha256,
            source=doc.source,
            seq=self.ledger.next_seq(d.deployment_id),
            previous_active=cur.ref if cur else None,
        )
        # execute() writes the journal first: from there on a restart resumes this deployment, and the
        # document counts as handled once it ends (not before: a transient failure tries it again).
        self.execute(rec)

    def resume(self) -> None:
        rec = self.journal.load()
        if rec is None:
            self._clean_orphan_staging(None)
            return
        self._clean_orphan_staging(rec)
        if rec.clean_stop:
            rec.clean_stop = False
            log.info("resuming %s at %s after a clean stop", rec.deployment_id, rec.step)
        elif rec.step not in TERMINAL:
            rec.crashes[rec.step] = rec.crashes.get(rec.step, 0) + 1
            log.warning(
                "resuming %s at %s after a crash (%d)", rec.deployment_id, rec.step, rec.crashes[rec.step]
            )
            if rec.crashes[rec.step] >= self.config.limits.max_step_entries:
                step = rec.step
                rec.error = error_of(CRASH_CODE[step], f"{step} was interrupted {rec.crashes[step]} times")
                rec.step = next_step(step, self._fatal(rec, step))
        self.execute(rec)

    def execute(self, rec: JournalRecord) -> None:
        self.idle.clear()
        self.reporter.in_progress = (rec.deployment_id, DeploymentState.ACCEPTED)
        retrying = False
        while rec.step not in TERMINAL:
            if self.stop.is_set():
                rec.clean_stop = True
                self._record(rec)
                return
            step = rec.step
            try:
                self.journal.save(rec)  # the step is recorded before it runs
            except DiskFullError as exc:
                if step is not Step.ROLLING_BACK:
                    rec.error = error_of(ErrorCode.DISK_FULL, f"{step} not started: {exc}")
                    rec.step = next_step(step, self._fatal(rec, step))
                    continue
                log.error("rolling back without a journal record (%s); the rollback is safe to repeat", exc)
            announce = ANNOUNCE.get(step)
            # DOWNLOADING announces with its progress; a step retried after DEFERRED is not announced again
            if announce and step is not Step.DOWNLOADING and not retrying:
                self._emit(rec, announce)
            try:
                self._pause(f"BEFORE_{step}")
                outcome = self.handlers[step](rec)
                if step in (Step.ACCEPTED, Step.DOWNLOADING):
                    rec.error = None  # a transient failure before this attempt is over
            except Interrupted:
                rec.clean_stop = True
                self.journal.save(rec)
                log.info("stopped %s in %s; it resumes on the next start", rec.deployment_id, step)
                return
            except EXPECTED as exc:
                if step is Step.ROLLING_BACK:
                    before = f"{rec.error.code}: {rec.error.detail}; " if rec.error else ""
                    rec.error = error_of(ErrorCode.ROLLBACK_FAILED, f"{before}rollback failed: {exc}")
                else:
                    rec.error = error_of(code_of(exc, step), str(exc))
                outcome = self._after_failure(rec, step, exc)
            rec.step = next_step(step, outcome)
            retrying = rec.step is step
            if not retrying:
                rec.attempts = 1
        self._record(rec)
        self.finish(rec)

    def _record(self, rec: JournalRecord) -> bool:
        """Write the journal where a failure to do so must not stop what follows (stops, the end)."""
        try:
            self.journal.save(rec)
        except DiskFullError as exc:
            log.error("journal not written: %s", exc)
            return False
        return True

    def _fatal(self, rec: JournalRecord, step: Step) -> Outcome:
        if step in (Step.HEALTH_CHECK, Step.ACTIVATING):
            policy = DesiredState.model_validate(rec.desired).policy
            return Outcome.FAIL if policy.rollback_on_failure else Outcome.GIVE_UP
        return Outcome.FAIL

    def _after_failure(self, rec: JournalRecord, step: Step, exc: BaseException) -> Outcome:
        policy = DesiredState.model_validate(rec.desired).policy
        transient = (
            step in (Step.ACCEPTED, Step.DOWNLOADING) and isinstance(exc, DownloadError) and exc.transient
        )
        if transient and rec.attempts >= policy.max_attempts:
            rec.retry_later = True  # not handled: the same document is tried again when it comes back
        if transient and rec.attempts < policy.max_attempts:
            lim = self.config.limits
            delay = min(lim.backoff_max_s, lim.backoff_initial_s * 2**rec.attempts) * random.uniform(0.5, 1.0)
            rec.attempts += 1
            self._emit(rec, DeploymentState.DEFERRED, error=rec.error, message=f"retrying in {delay:.1f} s")
            if self.stop.wait(delay):
                rec.clean_stop = True
            return Outcome.RETRY
        return self._fatal(rec, step)

    def finish(self, rec: JournalRecord) -> None:
        state = final_state(rec.step)
        staging = self.store.staging_dir(rec.bundle, rec.manifest_sha256)
        self.store.discard_staging(staging)
        if state is not DeploymentState.SUCCEEDED:
            self._drop_failed_version(rec)
            if rec.error and rec.error.code in BLOCKING_CODES:
                self.ledger.data.blocked[rec.manifest_sha256] = f"{rec.error.code} in {rec.deployment_id}"
        d = self.ledger.data
        if not rec.retry_later:
            d.applied_revision = max(d.applied_revision or 0, rec.revision)
        d.last_deployment, d.last_bundle, d.last_state = rec.deployment_id, rec.bundle, state
        d.last_error, d.last_time = rec.error, datetime.now(UTC)
        message = (
            "" if state is not DeploymentState.ROLLED_BACK else f"{rec.previous_active or 'no version'} kept"
        )
        self._emit(rec, state, error=rec.error, message=message)
        if self._bench is not None and state is DeploymentState.SUCCEEDED:
            self.reporter.bench(self._bench)
        self._bench = None
        self.ledger.set_seq(rec.deployment_id, rec.seq)
        if not rec.retry_later:
            self.ledger.mark_applied(rec.desired_sha256)
        self.ledger.save()
        self.journal.clear()
        self.reporter.in_progress = None
        self.reporter.reported()
        self._candidate = None
        if self.ledger.reserve is not None:
            self.ledger.reserve.ensure()  # made again once the failed version's files are gone

    def _drop_failed_version(self, rec: JournalRecord) -> None:
        cur, prev = self.store.current(), self.store.previous()
        failed = self.store.get(rec.bundle)
        keep = {v.ref for v in (cur, prev) if v}
        if failed and failed.manifest_sha256 == rec.manifest_sha256 and failed.ref not in keep:
            self.store.remove(failed.ref)

    def _clean_orphan_staging(self, rec: JournalRecord | None) -> None:
        keep = self.store.staging_dir(rec.bundle, rec.manifest_sha256) if rec else None
        for d in self.store.staging_root.iterdir():
            if d != keep:
                self.store.discard_staging(d)

    def _emit(
        self,
        rec: JournalRecord,
        state: DeploymentState,
        *,
        progress: Progress | None = None,
        error: EventError | None = None,
        message: str = "",
    ) -> None:
        seq = rec.next_seq()
        self._record(rec)  # the seq is spent before the event leaves, so it is never reused
        self.reporter.event(
            Event(
                device=self.config.device_id,
                deployment_id=rec.deployment_id,
                seq=seq,
                state=state,
                revision=rec.revision,
                bundle=rec.bundle,
                variant=rec.variant,
                provider=rec.provider,
                progress=progress,
                error=error,
                message=message,
            )
        )
        if state not in (DeploymentState.DOWNLOADING, *TERMINAL_EVENTS):
            self.reporter.in_progress = (rec.deployment_id, state)
            self.reporter.reported()

    # -- the steps -----------------------------------------------------------------------------

    def _desired(self, rec: JournalRecord) -> DesiredState:
        return DesiredState.model_validate(rec.desired)

    def _staging(self, rec: JournalRecord) -> Path:
        return self.store.staging_dir(rec.bundle, rec.manifest_sha256)

    def _manifest(self, rec: JournalRecord) -> BundleManifest:
        staged = self._staging(rec) / MANIFEST
        if staged.exists():
            return BundleManifest.model_validate_json(staged.read_bytes())
        installed = self.store.get(rec.bundle)
        if installed is None:
            raise ContractError(rec.bundle, "manifest missing from staging and store")
        return installed.manifest()

    def _files(self, rec: JournalRecord, manifest: BundleManifest) -> list[FileEntry]:
        return manifest.files_for(rec.variant or "")

    def _manifest_url(self, rec: JournalRecord) -> str:
        return urljoin(self.config.registry_url, self._desired(rec).bundle.manifest_url)

    def _accepted(self, rec: JournalRecord) -> Outcome:
        desired = self._desired(rec)
        url = self._manifest_url(rec)
        data = self.downloader.fetch_bytes(url, MAX_MANIFEST)
        digest = sha256_bytes(data)
        if digest != desired.bundle.manifest_sha256:
            raise ChecksumMismatchError(
                MANIFEST, f"sha256 is {digest}, the desired state says {rec.manifest_sha256}"
            )
        sig = self.downloader.fetch_bytes(urljoin(url, SIGNATURE), MAX_SIGNATURE)
        manifest, _ = verify_manifest_bytes(data, sig, self.trusted, f"{rec.bundle}/{MANIFEST}")
        if manifest.ref != rec.bundle:
            raise IncompatibleError(f"{url} is {manifest.ref}, the desired state asks for {rec.bundle}")
        choice = choose_variant(manifest, desired.variant_policy, override=self.config.runtime.providers)
        rec.variant, rec.providers = choice.variant_id, choice.providers
        check_bases(manifest, rec.variant)  # an adapter for other weights: refused before any download
        log.info(
            "%s: variant %s on %s (%s)", rec.bundle, rec.variant, rec.providers, "; ".join(choice.reasons)
        )
        cur = self.store.current()
        if cur and cur.ref == rec.bundle and cur.manifest_sha256 == rec.manifest_sha256:
            if cur.variant != rec.variant:
                raise IncompatibleError(
                    f"{rec.bundle} is active as {cur.variant}; switching its variant needs a new version"
                )
            rec.provider = cur.provider
            return Outcome.ACTIVE
        need_mb = manifest.variant(rec.variant).min_memory_mb  # the same rule as at load (edge_agent.memory)
        memory.check_fits(f"{rec.bundle} {rec.variant}", need_mb, self.config.runtime.memory_reserve_mb)
        installed = self.store.get(rec.bundle)
        if (
            installed
            and installed.manifest_sha256 == rec.manifest_sha256
            and installed.variant == rec.variant
        ):
            return Outcome.INSTALLED
        staging = self._staging(rec)
        staging.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(staging / MANIFEST, data)
        atomic.write_bytes(staging / SIGNATURE, sig)
        return Outcome.OK

    def _downloading(self, rec: JournalRecord) -> Outcome:
        manifest = self._manifest(rec)
        staging = self._staging(rec)
        base = self._manifest_url(rec)
        files = self._files(rec, manifest)
        reused = self.local.stage(files, staging, between=lambda: self._pause("LINKING")).reused_bytes
        jobs = [FileJob(file_url(base, f.path), staging / f.path, f.size, f.path) for f in files]
        total = sum(j.size for j in jobs)
        done = sum(bytes_on_disk(j) for j in jobs)
        rec.downloaded_at_start = done

        def progress(done: int) -> Progress:
            return Progress(done=done, total=total, reused=reused, to_fetch=total - rec.downloaded_at_start)

        self._emit(rec, DeploymentState.DOWNLOADING, progress=progress(done))
        need = total - done
        free = self.store.free_bytes()
        reserve = self.config.limits.min_free_disk_mb * MB
        if free - need < reserve:
            raise DiskFullError(
                f"{rec.bundle} {rec.variant} needs {need // MB + 1} MB more, {free // MB} MB free "
                f"(and {self.config.limits.min_free_disk_mb} MB must stay free)"
            )
        if done:
            log.info("%s: %d of %d bytes on the device already (%d reused)", rec.bundle, done, total, reused)
        last = time.monotonic()

        def count(n: int) -> None:
            nonlocal done, last
            done += n
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                self._emit(rec, DeploymentState.DOWNLOADING, progress=progress(done))

        for job in jobs:
            self.downloader.fetch_file(job, count)
        self._emit(rec, DeploymentState.DOWNLOADING, progress=progress(total))
        return Outcome.OK

    def _verifying(self, rec: JournalRecord) -> Outcome:
        staging = self._staging(rec)
        for entry in self._files(rec, self._manifest(rec)):
            if self.stop.is_set():
                raise Interrupted("stopping during verification")
            try:
                check_file(staging, entry)
            except BundleError:
                self.local.forget(staging / entry.path, entry)
                (staging / entry.path).unlink(missing_ok=True)  # never resumed from a bad file
                raise
            self.local.adopt(staging / entry.path, entry)  # reusable by sha256 from now on
        return Outcome.OK

    def _installing(self, rec: JournalRecord) -> Outcome:
        self.store.install(self._staging(rec), rec.bundle, rec.variant or "", rec.manifest_sha256)
        self._pause("INSTALLING")
        return Outcome.OK

    def _health_check(self, rec: JournalRecord) -> Outcome:
        installed = self.store.get(rec.bundle)
        if installed is None:
            raise DeployError(f"{rec.bundle} vanished from the store before its health check")
        policy = self._desired(rec).policy
        candidate = self.activator.load_candidate(
            installed.path,
            installed.manifest(),
            rec.variant or installed.variant,
            rec.providers,
            policy.health_timeout_s,
        )
        self._candidate = candidate
        rec.provider = candidate.provider
        self.reporter.provider_fallbacks = list(candidate.fallbacks)
        if policy.bench_after_install:
            self._bench = self._run_bench(candidate, policy.health_timeout_s)
        self._pause("HEALTH_CHECK")
        return Outcome.OK

    def _run_bench(self, candidate: Candidate, timeout_s: float) -> BenchRecord:
        """The short bench the policy asked for, part of the gate: a model that cannot bench fails it."""
        loaded = getattr(candidate.handle, "model", None)
        if loaded is not None:  # the serving host holds the LoadedModel: bench it in place
            from edge_agent.device_bench import run_device_bench

            return run_device_bench(
                loaded,
                model_ref=candidate.manifest.ref,
                variant=candidate.variant_id,
                device=self.config.device_id,
                precision=candidate.manifest.variant(candidate.variant_id).precision,
                budget_s=timeout_s,
            )
        bench_in_child = getattr(self.activator, "bench", None)
        if bench_in_child is None:
            raise HealthCheckError(f"{candidate.manifest.ref}: this activator cannot run the bench")
        return BenchRecord.model_validate(bench_in_child(candidate, timeout_s, self.config.device_id))

    def _activating(self, rec: JournalRecord) -> Outcome:
        candidate = self._candidate
        if candidate is None:  # restarted after the health check: load it again (the gate runs again)
            installed = self.store.get(rec.bundle)
            if installed is None:
                raise DeployError(f"{rec.bundle} vanished from the store before activation")
            candidate = self.activator.load_candidate(
                installed.path,
                installed.manifest(),
                rec.variant or installed.variant,
                rec.providers,
                self._desired(rec).policy.health_timeout_s,
            )
            rec.provider = candidate.provider
        self.store.activate(rec.bundle)
        self.store.set_provider(rec.bundle, candidate.provider)
        self.activator.promote(candidate)
        self.served = rec.bundle
        self._candidate = None
        removed = self.store.collect(self.config.limits.keep_versions)
        if removed:
            log.info("removed old versions: %s", ", ".join(removed))
        return Outcome.OK

    def _rolling_back(self, rec: JournalRecord) -> Outcome:
        if self._candidate is not None:
            self.activator.discard(self._candidate)
            self._candidate = None
        target = rec.previous_active
        cur = self.store.current()
        if (cur.ref if cur else None) != target:
            self.store.restore(target)
        if target and getattr(self.activator, "serves", True) and self.served != target:
            restored = self.store.get(target)
            if restored is None:
                raise DeployError(f"{target} is no longer in the store")
            candidate = self.activator.load_candidate(
                restored.path,
                restored.manifest(),
                restored.variant,
                [restored.provider] if restored.provider else ["CPUExecutionProvider"],
                self._desired(rec).policy.health_timeout_s,
            )
            self.activator.promote(candidate)
            self.served = target
        return Outcome.OK

    def _pause(self, point: str) -> None:
        """Test hook: EDGE_AGENT_TEST_PAUSE='INSTALLING=5' sleeps there, so a test can kill -9 at that point.
        Points: INSTALLING (after the rename), HEALTH_CHECK (after the probe), BEFORE_<STEP> (each step,
        once its journal record and announcement are out, before it runs)."""
        seconds = self._pauses.get(point)
        if seconds:
            log.warning("test pause at %s for %.1f s", point, seconds)
            if self.stop.wait(seconds):
                raise Interrupted(f"stopping during the test pause at {point}")


TERMINAL_EVENTS = (
    DeploymentState.SUCCEEDED,
    DeploymentState.FAILED,
    DeploymentState.ROLLED_BACK,
    DeploymentState.REJECTED,
)


def _test_pauses() -> dict[str, float]:
    spec = os.environ.get("EDGE_AGENT_TEST_PAUSE", "")
    pauses = {}
    for item in filter(None, spec.split(",")):
        point, _, seconds = item.partition("=")
        pauses[point.strip().upper()] = float(seconds or 5)
    return pauses


__all__ = ["ERROR_CODES", "Admitted", "Reconciler", "Rejected", "code_of"]
