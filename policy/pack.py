"""The rules as CrossGuard resource policies. Building these objects starts nothing; __main__ serves them."""

from __future__ import annotations

from collections.abc import Callable

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy.rules import RULES, STACK_RULES, PolicyResource, Rule, StackRule


def _validator(rule: Rule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        resource = PolicyResource(
            type=args.resource_type, name=args.name, props=dict(args.props), protect=bool(args.opts.protect)
        )
        for message in rule.check(resource):
            report_violation(message, None)

    return validate


def _stack_validator(rule: StackRule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            PolicyResource(type=r.resource_type, name=r.name, props=dict(r.props), protect=bool(r.opts.protect))
            for r in args.resources
        ]
        for message in rule.check(resources):
            report_violation(message, None)

    return validate


def policies() -> list[Policy]:
    stack_policies: list[Policy] = [
        StackValidationPolicy(
            name=rule.name,
            description=rule.description,
            enforcement_level=EnforcementLevel.MANDATORY,
            validate=_stack_validator(rule),
        )
        for rule in STACK_RULES
    ]
    return stack_policies + [
        ResourceValidationPolicy(
            name=rule.name,
            description=rule.description,
            enforcement_level=EnforcementLevel.MANDATORY,
            validate=_validator(rule),
        )
        for rule in RULES
    ]
