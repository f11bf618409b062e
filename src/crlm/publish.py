"""Publishing a job's champion: the registry and the served bundle change together or not at all.

The served bundle ``models/<name>`` is a symbolic link to a complete, versioned bundle directory beside it,
``models/.bundles/<name>/v<version>-<run>`` (``Predictor.load("models/<name>")`` reads through the link, so a
server needs no change). A job publishes in this order; a job killed at any point leaves a state that is
either still the previous one or that the next start finishes or undoes (``recover``):

1. register the new model versions, tagged ``crlm_state=pending`` with the job's host and pid;
2. write the new bundle beside the old one (a staging directory, renamed into place once complete);
3. write a journal (``publishing.json``: the new and the previous bundle and version);
4. switch the link to the new bundle: ``os.replace`` of a link is atomic, there is never a moment without one;
5. move the ``champion`` / ``challenger`` aliases (last);
6. mark the versions ``crlm_state=complete``, remove the journal and older bundles.

``recover`` (at the start of every job, for its model) repairs what a dead job left: with its journal and the
alias not yet moved it points the link back at the previous bundle (with the alias moved, it completes the
publication); it deletes pending versions that no alias points to and whose job is dead, removes their bundles
and staging directories, and marks the dead job's MLflow runs KILLED. "Dead" is decided only for jobs on this
host (their pid is gone); a job on another host is left alone.

Kill points for tests: ``CRLM_KILL_AT=<stage>`` makes the job SIGKILL itself at ``checkpoint(<stage>)``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from crlm import tracking
from crlm.ownership import owner, owner_dead

KILL_ENV = "CRLM_KILL_AT"
STAGES = ("benchmark", "tracking", "register-champion", "register", "bundle", "journal", "switch", "alias",
          "complete")
PENDING, COMPLETE = "pending", "complete"
JOURNAL = "publishing.json"


def checkpoint(stage: str) -> None:
    """Die here, like a killed job, when ``CRLM_KILL_AT`` names this stage (the kill tests' hook)."""
    if os.environ.get(KILL_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Published:
    """What a publication produced.

    Parameters
    ----------
    champion_version, challenger_version : str, str or None
        The registry versions behind ``@champion`` / ``@challenger``.
    bundle : Path
        The served link (``models/<name>``).
    """

    champion_version: str
    challenger_version: str | None
    bundle: Path


def bundle_root(target: Path) -> Path:
    """Where the versioned bundles of ``target`` (``models/<name>``) live."""
    return target.parent / ".bundles" / target.name


def publish(name: str, versions: list[tuple[str, str]], tags: dict[str, str], write_bundle,
            target: Path) -> Published:
    """Register, write the bundle, switch it, then move the aliases (the module docstring's order).

    Parameters
    ----------
    name : str
        Registered model name.
    versions : list of (str, str)
        ``(model, logged model URI)`` of the champion, then of the runner-up if any.
    tags : dict
        Version tags (job, cohort, parent run id, ...).
    write_bundle : callable
        ``write_bundle(directory, version)`` writes the complete champion bundle into ``directory``.
    target : Path
        The served bundle path, ``models/<name>``.

    Returns
    -------
    Published
    """
    client = MlflowClient()
    state = tags | owner() | {"crlm_state": PENDING}
    registered = []
    for i, (model, uri) in enumerate(versions):
        registered.append(tracking.register(uri, name, state | {"model": model}))
        if i == 0:
            checkpoint("register-champion")
    champion_version = registered[0]
    challenger_version = registered[1] if len(registered) > 1 else None
    checkpoint("register")

    root = bundle_root(target)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"v{champion_version}-{tags.get('parent_run_id', 'run')[:8]}"
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(), dir=root))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the bundle from a server running as another user
    write_bundle(staging, champion_version)
    staging.rename(final)
    checkpoint("bundle")

    previous = _adopt_legacy(target) or _linked(target)
    _write_journal(root, {"version": champion_version, "challenger_version": challenger_version,
                          "bundle": final.name, "previous_bundle": previous.name if previous else None} | owner())
    checkpoint("journal")
    _switch(target, final)
    checkpoint("switch")
    tracking.set_aliases(name, champion_version, challenger_version)
    checkpoint("alias")
    _complete(client, name, registered)
    (root / JOURNAL).unlink()
    _prune(root, keep={final.name, previous.name if previous else ""})
    checkpoint("complete")
    return Published(champion_version, challenger_version, target)


def recover(name: str, target: Path, log=print) -> list[str]:
    """Repair what a dead job left for this model (see the module docstring); returns what was done."""
    client = MlflowClient()
    done: list[str] = []
    root = bundle_root(target)
    journal = _read_journal(root)
    if journal is not None and owner_dead(journal):
        if tracking.champion_version(name) == journal["version"]:  # aliases moved: the publication is complete
            _complete(client, name, [v for v in (journal["version"], journal.get("challenger_version")) if v])
            done.append(f"completed the publication of v{journal['version']} (its job died after the aliases)")
        else:
            previous = journal.get("previous_bundle")
            if previous and (root / previous).is_dir():
                _switch(target, root / previous)
            elif target.is_symlink():
                target.unlink()  # there was no bundle before this job
            done.append(f"rolled the bundle back to {previous or 'none'} (its job died before the aliases)")
        (root / JOURNAL).unlink()
    aliased = _aliases(client, name)  # version -> alias (search results do not carry aliases)
    for version in _search_versions(client, name):
        tags = version.tags or {}
        if tags.get("crlm_state") == PENDING and str(version.version) not in aliased and owner_dead(tags):
            client.delete_model_version(name, version.version)
            done.append(f"deleted v{version.version}, registered by a job that died before publishing it")
    for version in _search_versions(client, name):  # a job killed after its aliases moved did publish
        run_id = (version.tags or {}).get("parent_run_id")
        alias = aliased.get(str(version.version))
        if alias == tracking.CHAMPION and run_id and _mark_published(client, run_id, str(version.version)):
            done.append(f"marked the job run {run_id[:8]} as published (v{version.version} is @{alias})")
    _drop_empty_model(client, name)
    if root.is_dir():
        for staging in root.glob(".staging-*"):
            if owner_dead(_staging_owner(staging.name)):
                shutil.rmtree(staging, ignore_errors=True)
                done.append(f"removed the staging directory {staging.name}")
        if journal is None or owner_dead(journal):
            linked = _linked(target)
            complete = {f"v{v.version}" for v in _search_versions(client, name)
                        if (v.tags or {}).get("crlm_state", COMPLETE) == COMPLETE}
            for bundle in root.glob("v*"):
                if bundle.is_dir() and bundle != linked and bundle.name.split("-")[0] not in complete:
                    shutil.rmtree(bundle, ignore_errors=True)
                    done.append(f"removed the unpublished bundle {bundle.name}")
    for legacy in target.parent.glob(f".{target.name}-*"):  # staging of the earlier export (mkdtemp beside it)
        if legacy.is_dir():
            shutil.rmtree(legacy, ignore_errors=True)
            done.append(f"removed the old staging directory {legacy.name}")
    for line in done:
        log(f"recovered {name}: {line}")
    return done


def _staging_prefix() -> str:
    return f".staging-{socket.gethostname()}-{os.getpid()}-"


def _staging_owner(dirname: str) -> dict[str, str]:
    parts = dirname.removeprefix(".staging-").rsplit("-", 2)
    return {"crlm_host": parts[0], "crlm_pid": parts[1]} if len(parts) == 3 else {}


def _linked(target: Path) -> Path | None:
    """The bundle directory ``target`` points to (None if there is no link)."""
    if target.is_symlink():
        return (target.parent / os.readlink(target)).resolve()
    return None


def _adopt_legacy(target: Path) -> Path | None:
    """A plain bundle directory from before versioned bundles becomes the first versioned one, served by link."""
    if not target.exists() or target.is_symlink():
        return None
    legacy = bundle_root(target) / "v0-legacy"
    shutil.rmtree(legacy, ignore_errors=True)
    target.rename(legacy)  # the one moment without a bundle: once, when migrating from the old layout
    _switch(target, legacy)
    return legacy


def _switch(target: Path, bundle: Path) -> None:
    """Point ``target`` at ``bundle`` atomically (a new link renamed over the old one)."""
    link = target.parent / f".{target.name}.link-{os.getpid()}"
    if link.is_symlink():
        link.unlink()
    os.symlink(os.path.relpath(bundle, target.parent), link)
    os.replace(link, target)


def _write_journal(root: Path, entry: dict) -> None:
    tmp = root / f".{JOURNAL}.{os.getpid()}"
    tmp.write_text(json.dumps(entry, indent=2))
    os.replace(tmp, root / JOURNAL)


def _read_journal(root: Path) -> dict | None:
    path = root / JOURNAL
    return json.loads(path.read_text()) if path.exists() else None


def _complete(client: MlflowClient, name: str, versions: list[str]) -> None:
    for version in versions:
        client.set_model_version_tag(name, version, "crlm_state", COMPLETE)


def _mark_published(client: MlflowClient, run_id: str, version: str) -> bool:
    try:
        tags = client.get_run(run_id).data.tags
    except MlflowException:
        return False
    if tags.get("crlm_published") == "true":
        return False
    client.set_tag(run_id, "crlm_published", "true")
    client.set_tag(run_id, "crlm_champion_version", version)
    return True


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    try:
        return {str(v): a for a, v in client.get_registered_model(name).aliases.items()}
    except MlflowException:
        return {}


def _search_versions(client: MlflowClient, name: str) -> list:
    try:
        return list(client.search_model_versions(f"name='{name}'"))
    except MlflowException:
        return []


def _drop_empty_model(client: MlflowClient, name: str) -> None:
    """A registered model left with no version by a dead first job is removed: the registry is as it was."""
    try:
        if not client.search_model_versions(f"name='{name}'") and client.get_registered_model(name):
            client.delete_registered_model(name)
    except MlflowException:
        pass


def _prune(root: Path, keep: set[str]) -> None:
    """Remove bundles other than ``keep`` (the served one and the one it replaced)."""
    for bundle in root.glob("v*"):
        if bundle.is_dir() and bundle.name not in keep:
            shutil.rmtree(bundle, ignore_errors=True)
