"""`alle-ops migrate retry`: run the release's migration again, under an execution token never used before.

The migrate job's token is `<release>-<RandomId hex>` (components/jobs.py), and the RandomId keeps its bytes while
the image and release stay the same. Two cases need new bytes for the same release: a failed migration whose
cause is fixed, and a `pulumi refresh` after a manual run, which clears the token in state so the next `up` would
resend a used one (hashicorp/terraform-provider-google#24451). Replacing the RandomId gives both a fresh token.
"""

from __future__ import annotations

from ops.pulumi_cli import Stacks


def token_urn(stack: str) -> str:
    """The RandomId's URN (project alle, component alle:jobs:Jobs named after the stack)."""
    return f"urn:pulumi:{stack}::alle::alle:jobs:Jobs$random:index/randomId:RandomId::alle-{stack}-migrate-token"


def retry(stacks: Stacks, stack: str) -> str:
    """A full `pulumi up` with the token replaced: a new execution, then web and worker roll out if it succeeds."""
    urn = token_urn(stack)
    stacks.up(stack, [], replace=[urn])
    return urn
