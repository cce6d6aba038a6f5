"""`pulumi preview --policy-pack policy`: serve the alle rules (constructing PolicyPack starts the server)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.pack import policies

PolicyPack(name="alle", enforcement_level=EnforcementLevel.MANDATORY, policies=policies())
