"""A pause after IAM grants, before anything that uses them starts: IAM changes are eventually consistent."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumiverse_time as time

#: "Typically [...] within 2 minutes", "7 minutes or longer" in rare cases:
#: https://cloud.google.com/iam/docs/access-change-propagation. A revision that starts before its secret grant has
#: propagated fails with permission denied; two minutes covers the typical case on a first `pulumi up`.
DELAY = "120s"


def _fingerprint(urns: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(urns)).encode()).hexdigest()[:16]


@dataclass
class PropagationArgs:
    #: The grants to wait for (secret and bucket access).
    grants: Sequence[pulumi.Resource]


class Propagation(pulumi.ComponentResource):
    """Waits when the set of grants changes (first `pulumi up`, a new secret); other `pulumi up`s do not pause."""

    def __init__(self, name: str, args: PropagationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:propagation:Propagation", name, None, opts)
        self.sleep = time.Sleep(
            f"{name}-iam",
            time.SleepArgs(
                create_duration=DELAY,
                triggers={"grants": pulumi.Output.all(*(g.urn for g in args.grants)).apply(_fingerprint)},
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.grants)),
        )
        self.register_outputs({})
