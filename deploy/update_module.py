"""The `keycam` Mender update module (protocol v3): Mender's deployment states, carried out by
keycam's A/B agent. Device side (no tools/ imports).

Mender runs /usr/share/mender/modules/v3/keycam STATE FILES_DIR (a launcher written by
deploy.mender.install_update_module), which runs
    python -m deploy.update_module --root DEVICE_ROOT STATE FILES_DIR
FILES_DIR/files/ holds the artifact's payload, one signed keycam bundle; FILES_DIR/tmp/ lives for
the whole deployment and keeps what ArtifactInstall did.

    SupportsRollback     -> Yes
    NeedsArtifactReboot  -> No (the service restarts; the device does not reboot)
    ArtifactInstall      -> the agent installs the bundle into the inactive slot, switches to it,
                            restarts the service and health-checks it; unhealthy -> the agent has
                            switched back already and the state fails
    ArtifactCommit       -> the new slot must still be the running, committed one and pass the health
                            check again (service up, canary frames classified as expected)
    ArtifactRollback,
    ArtifactFailure      -> if this deployment's slot is still the committed one, the agent rolls back
                            to the previous slot; otherwise there is nothing to undo
The agent's rules stay in force: the bundle signature (identity/signing.pub), device id, hardware,
no downgrade and the minimum-version floor (a rollback below that floor is refused).
Any other state (Download, Cleanup, future ones) does nothing, as the protocol asks.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from base.errors import KeycamError
from deploy.agent import Agent

RECORD = "keycam-install.json"
BUNDLE_SUFFIX = ".bundle"


class UpdateModuleError(KeycamError):
    """A Mender state could not be carried out; Mender fails (and rolls back) the deployment."""


@dataclass
class InstallRecord:
    """What ArtifactInstall did: the slot and version it committed (None: nothing changed)."""
    slot: str | None
    version: str | None
    from_version: str | None


def _record_path(files_dir: Path) -> Path:
    return files_dir / "tmp" / RECORD


def _load_record(files_dir: Path) -> InstallRecord | None:
    path = _record_path(files_dir)
    if not path.exists():
        return None
    try:
        return InstallRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise UpdateModuleError(f"{path} is corrupted: {exc}") from exc


def _bundle(files_dir: Path) -> Path:
    found = sorted((files_dir / "files").glob(f"*{BUNDLE_SUFFIX}"))
    if len(found) != 1:
        raise UpdateModuleError(f"the artifact must carry exactly one keycam {BUNDLE_SUFFIX} file, "
                                f"found {len(found)} in {files_dir / 'files'}")
    return found[0]


def artifact_install(agent: Agent, files_dir: Path) -> str:
    result = agent.install(_bundle(files_dir))
    if not result["ok"]:
        raise UpdateModuleError(f"keycam install of {result.get('version')} failed and the device is back "
                                f"on slot {result.get('rolled_back_to')}: {result.get('reason')}")
    changed = not result.get("already_installed")
    record = InstallRecord(result["committed"] if changed else None, result["version"] if changed else None,
                           result.get("from_version"))
    _record_path(files_dir).write_text(json.dumps(asdict(record)))
    return f"installed {result['version']} into slot {result['committed']} (was {result.get('from_version')})"


def _still_installed(agent: Agent, record: InstallRecord | None) -> dict | None:
    """The agent's status if this deployment's slot is still the committed one, else None."""
    if record is None or record.slot is None:
        return None
    status = agent.status()
    if status["committed"] == record.slot and status["version"] == record.version:
        return status
    return None


def artifact_commit(agent: Agent, files_dir: Path) -> str:
    record = _load_record(files_dir)
    if record is None:
        raise UpdateModuleError("ArtifactCommit without a successful ArtifactInstall in this deployment")
    if record.slot is None:
        return "nothing to commit: the bundle was already installed"
    verdict = agent.check_committed(record.slot, record.version)
    if not verdict["ok"]:
        raise UpdateModuleError(f"health check of slot {record.slot} ({record.version}) failed: "
                                f"{verdict.get('reason')}")
    return f"committed {record.version} in slot {record.slot}"


def artifact_rollback(agent: Agent, files_dir: Path) -> str:
    record = _load_record(files_dir)
    if _still_installed(agent, record) is None:
        return "nothing to roll back: the previous slot is the committed one"
    result = agent.rollback()
    if not result["ok"]:
        raise UpdateModuleError(f"rollback from {record.version} failed: {result.get('reason')}")
    return f"rolled back from {record.version} to {result['version']} in slot {result['committed']}"


QUERIES = {"SupportsRollback": "Yes", "NeedsArtifactReboot": "No"}
ACTIONS = {"ArtifactInstall": artifact_install, "ArtifactCommit": artifact_commit,
           "ArtifactRollback": artifact_rollback, "ArtifactFailure": artifact_rollback}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.update_module", description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="keycam device root")
    p.add_argument("state")
    p.add_argument("files_dir", nargs="?", type=Path)
    args = p.parse_args(argv)
    if args.state in QUERIES:
        print(QUERIES[args.state])
        return 0
    action = ACTIONS.get(args.state)
    if action is None:
        return 0
    if args.files_dir is None:
        p.error(f"{args.state} needs the Mender FILES_DIR")
    try:
        print(f"keycam {args.state}: {action(Agent(args.root), args.files_dir)}")
    except (KeycamError, OSError) as exc:
        print(f"keycam {args.state}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
