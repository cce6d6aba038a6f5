"""The rules as CrossGuard resource policies. Building these objects starts nothing; __main__ serves them."""

from __future__ import annotations

from collections.abc import Callable

from pulumi_policy import EnforcementLevel, Policy, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from policy.rules import RULES, PolicyResource, Rule


def _validator(rule: Rule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        resource = PolicyResource(
            type=args.resource_type, name=args.name, props=dict(args.props), protect=bool(args.opts.protect)
        )
        for message in rule.check(resource):
            report_violation(message, None)

    return validate


def policies() -> list[Policy]:
    return [
        ResourceValidationPolicy(
            name=rule.name,
            description=rule.description,
            enforcement_level=EnforcementLevel.MANDATORY,
            validate=_validator(rule),
        )
        for rule in RULES
    ]
