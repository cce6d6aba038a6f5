"""The stacks as CI deploys them: the mail key set as a secret, production pinned to staging's digest."""

from __future__ import annotations

from ops.graph import Graph, program, stack_config

MAIL_KEY = "SG.mock-sendgrid-key"
#: What `alle-ops promote` pins into production: the digest staging built.
PROMOTED = "europe-west1-docker.pkg.dev/alle-registry/alle/alle@sha256:" + "ab" * 32


def deployed_config(stack: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    config = stack_config(stack) | {"alle:mailApiKey": MAIL_KEY}
    if stack == "production" and not config.get("alle:image"):
        config["alle:image"] = PROMOTED
    return config | (overrides or {})


def deployed(stack: str, overrides: dict[str, str] | None = None) -> Graph:
    return program(stack, deployed_config(stack, overrides))
