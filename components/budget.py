"""A monthly billing budget on the stack's project, when the stack names its billing account.

https://cloud.google.com/billing/docs/how-to/budgets; the amount's currency must be the billing account's.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

#: (fraction of the budget, spend basis): alert on actual spend at 50/90/100% and on forecast at 100%.
THRESHOLDS = ((0.5, "CURRENT_SPEND"), (0.9, "CURRENT_SPEND"), (1.0, "CURRENT_SPEND"), (1.0, "FORECASTED_SPEND"))


@dataclass
class BudgetArgs:
    project: str
    prefix: str
    billing_account: str
    monthly_usd: int
    channels: list[pulumi.Output[str]]
    depends_on: list[pulumi.Resource]


class Budget(pulumi.ComponentResource):
    def __init__(self, name: str, args: BudgetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:budget:Budget", name, None, opts)
        number = gcp.organizations.get_project_output(project_id=args.project).number
        self.budget = gcp.billing.Budget(
            f"{name}-budget",
            gcp.billing.BudgetArgs(
                billing_account=args.billing_account,
                display_name=f"{args.prefix} monthly",
                budget_filter=gcp.billing.BudgetBudgetFilterArgs(
                    projects=[pulumi.Output.concat("projects/", number)], calendar_period="MONTH"
                ),
                amount=gcp.billing.BudgetAmountArgs(
                    specified_amount=gcp.billing.BudgetAmountSpecifiedAmountArgs(
                        currency_code="USD", units=str(args.monthly_usd)
                    )
                ),
                threshold_rules=[
                    gcp.billing.BudgetThresholdRuleArgs(threshold_percent=percent, spend_basis=basis)
                    for percent, basis in THRESHOLDS
                ],
                all_updates_rule=gcp.billing.BudgetAllUpdatesRuleArgs(
                    monitoring_notification_channels=args.channels, disable_default_iam_recipients=False
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.register_outputs({"budget": self.budget.name})
