"""Does every node of a cluster see the run folder, and the datasets, as the driver does?

Blocks trained on other machines write into the driver's run folder and read the driver's
photos, so both must be on storage every node mounts at the same path (NFS, a shared volume).
Before anything is scheduled, each node writes a probe file into the run folder
(:func:`write_probe`), and the driver reads every one back and compares what each node lists
of the datasets (:func:`check_probes`). A node that writes somewhere the driver cannot read is
one error line naming the node.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from birdnerf.atomic import write_text
from birdnerf.errors import BirdnerfError

SHARE_HINT = (
    "put the run and its dataset on a folder every node mounts at the same path (NFS, a shared "
    "volume), or train without --ray"
)


@dataclass
class ProbeReport:
    """What one node did and saw: its host, the error if it could not write its probe, and a digest
    of each dataset folder's listing (None where it cannot list it)."""

    node: str
    host: str
    error: str | None = None
    datasets: dict[str, str | None] = field(default_factory=dict)


def listing_digest(folder: str | Path) -> str | None:
    """A digest of the names in ``folder`` (None if it cannot be listed): equal on two machines
    when both see the same folder."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return None
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


def write_probe(probe_dir: str, node: str, token: str, datasets: list[str]) -> ProbeReport:
    """Runs on each node: write ``probe_dir/<node>`` holding ``token`` and list the datasets.

    The probe folder's parent, the run folder, must already exist on the node: it is not created
    here, so a node that does not see the run at all says so."""
    report = ProbeReport(node=node, host=socket.gethostname())
    try:
        folder = Path(probe_dir)
        folder.mkdir(exist_ok=True)
        write_text(folder / node, token)
    except OSError as err:
        report.error = f"{err.strerror or err} ({err.filename or probe_dir})"
    except BirdnerfError as err:  # the atomic write's own one-line wording of an OSError
        report.error = str(err)
    report.datasets = {d: listing_digest(d) for d in datasets}
    return report


def check_probes(run_dir: Path, probe_dir: Path, token: str, datasets: list[str], reports: list[ProbeReport]):
    """Raise one line naming the first node whose probe the driver cannot read back, or that sees a
    dataset folder differently."""
    for r in reports:
        where = f"Ray node {r.host} ({r.node[:8]})"
        if r.error:
            raise BirdnerfError(f"{where} cannot write into the run folder: {r.error}; {SHARE_HINT}", run_dir)
        probe = probe_dir / r.node
        seen = probe.read_text(encoding="utf-8") if probe.is_file() else None
        if seen != token:
            raise BirdnerfError(
                f"{where} wrote its probe file into a run folder this machine does not see: the run "
                f"folder is not shared; {SHARE_HINT}",
                run_dir,
            )
        for d in datasets:
            if r.datasets.get(d) != listing_digest(d):
                raise BirdnerfError(
                    f"{where} does not see the dataset as this machine does; {SHARE_HINT}", Path(d)
                )
