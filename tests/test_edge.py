"""The custom domain: load balancer, managed certificate, HTTP → HTTPS, DNS records, Cloud Armor, and a web
service nobody reaches around it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pulumi_policy import StackValidationArgs, StackValidationPolicy

from ops.graph import Graph
from policy import rules
from policy.pack import policies
from stacks import deployed

SERVICE = "gcp:cloudrunv2/service:Service"
NEG = "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup"
RULE = "gcp:compute/globalForwardingRule:GlobalForwardingRule"
URL_MAP = "gcp:compute/uRLMap:URLMap"
ARMOR = "gcp:compute/securityPolicy:SecurityPolicy"
BACKEND = "gcp:compute/backendService:BackendService"
CERT = "gcp:compute/managedSslCertificate:ManagedSslCertificate"
RECORD = "gcp:dns/recordSet:RecordSet"
DOMAIN = {"staging": "staging.alle.app", "production": "alle.app"}


def test_https_load_balancer_with_a_managed_certificate_for_the_domain(stack: Graph) -> None:
    domain = DOMAIN[stack.stack]
    cert = stack.one(CERT)
    assert cert.inputs["managed"]["domains"] == [domain, f"candidate.{domain}"]
    rules_by_port = {r.inputs["portRange"]: r for r in stack.of_type(RULE)}
    assert set(rules_by_port) == {"443", "80"}
    assert {r.inputs["loadBalancingScheme"] for r in rules_by_port.values()} == {"EXTERNAL_MANAGED"}
    assert len({r.inputs["ipAddress"] for r in rules_by_port.values()}) == 1, "both ports on one address"
    https = stack.one("gcp:compute/targetHttpsProxy:TargetHttpsProxy")
    assert https.inputs["sslCertificates"] == [f"alle-{stack.stack}-cert-id"]
    tls = stack.one("gcp:compute/sSLPolicy:SSLPolicy")
    assert https.inputs["sslPolicy"] == f"{tls.name}-id"
    assert (tls.inputs["minTlsVersion"], tls.inputs["profile"]) == ("TLS_1_2", "MODERN")
    assert rules_by_port["443"].inputs["target"] == https.name + "-id"


def test_http_only_redirects_to_https(stack: Graph) -> None:
    http = stack.one("gcp:compute/targetHttpProxy:TargetHttpProxy")
    [redirect] = [m for m in stack.of_type(URL_MAP) if f"{m.name}-id" == http.inputs["urlMap"]]
    assert redirect.inputs["defaultUrlRedirect"]["httpsRedirect"] is True
    assert "defaultService" not in redirect.inputs


def test_serverless_negs_point_at_the_web_service_and_this_releases_tag(stack: Graph) -> None:
    service = stack.one(SERVICE)
    negs = stack.of_type(NEG)
    assert {n.inputs["networkEndpointType"] for n in negs} == {"SERVERLESS"}
    assert {n.inputs["cloudRun"]["service"] for n in negs} == {service.inputs["name"]}
    assert sorted(n.inputs["cloudRun"].get("tag", "") for n in negs) == ["", service.inputs["traffics"][0]["tag"]]
    assert all(stack.depends_on(n, service) for n in negs)
    lb = next(m for m in stack.of_type(URL_MAP) if m.inputs.get("hostRules"))
    assert lb.inputs["hostRules"] == [{"hosts": [f"candidate.{DOMAIN[stack.stack]}"], "pathMatcher": "candidate"}]


def test_every_backend_is_behind_the_armor_policy(stack: Graph) -> None:
    policy = stack.one(ARMOR)
    backends = stack.of_type(BACKEND)
    assert len(backends) == 2
    assert {b.inputs["securityPolicy"] for b in backends} == {f"{policy.name}-id"}


def test_auth_paths_are_rate_limited_per_client_ip(stack: Graph) -> None:
    [limit] = [r for r in stack.one(ARMOR).inputs["rules"] if r["action"] == "throttle"]
    # Decoded: `/v1/%61uth/signup` reaches the app's sign-up handler.
    assert limit["match"]["expr"]["expression"] == "request.path.urlDecode().lower().startsWith('/v1/auth/')"
    options = limit["rateLimitOptions"]
    assert (options["enforceOnKey"], options["conformAction"], options["exceedAction"]) == ("IP", "allow", "deny(429)")
    assert options["rateLimitThreshold"] == {"count": 30, "intervalSec": 60}


def _waf(graph: Graph) -> list[dict[str, object]]:
    return [r for r in graph.one(ARMOR).inputs["rules"] if "evaluatePreconfiguredWaf" in str(r["match"])]


def test_owasp_rules_preview_in_staging_and_are_enforced_in_production(staging: Graph, production: Graph) -> None:
    assert len(_waf(staging)) == len(_waf(production)) == 8
    assert {r["preview"] for r in _waf(staging)} == {True}
    assert {r.get("preview", False) for r in _waf(production)} == {False}
    assert {r["action"] for r in _waf(production)} == {"deny(403)"}


def test_no_waf_rule_refuses_the_patch_and_delete_the_api_uses(staging: Graph, production: Graph) -> None:
    """methodenforcement's CRS rule 911100 allows GET, HEAD, POST and OPTIONS only: enforced in production, it
    would answer 403 to every task edit and delete, while staging, in preview, only logged them."""
    for graph in (staging, production):
        assert [r for r in _waf(graph) if "methodenforcement" in str(r["match"])] == []


def test_armor_rules_and_thresholds_come_from_config() -> None:
    graph = deployed(
        "staging",
        {
            "alle:authRateLimit": "5",
            "alle:authRateLimitIntervalSec": "10",
            "alle:wafRules": '["sqli-v33-stable", "xss-v33-canary"]',
            "alle:wafSensitivity": "2",
        },
    )
    armor = graph.one(ARMOR).inputs["rules"]
    assert [r["match"]["expr"]["expression"] for r in _waf(graph)] == [  # type: ignore[index]
        "evaluatePreconfiguredWaf('sqli-v33-stable', {'sensitivity': 2})",
        "evaluatePreconfiguredWaf('xss-v33-canary', {'sensitivity': 2})",
    ]
    assert armor[0]["rateLimitOptions"]["rateLimitThreshold"] == {"count": 5, "intervalSec": 10}
    assert armor[-1]["priority"] == 2147483647 and armor[-1]["action"] == "allow"


def test_with_a_domain_web_takes_only_load_balancer_traffic_and_has_no_run_app_url(stack: Graph) -> None:
    service = stack.one(SERVICE).inputs
    assert service["ingress"] == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
    assert service["defaultUriDisabled"] is True
    assert stack.outputs["web_url"] == f"https://{DOMAIN[stack.stack]}"


def test_dns_records_are_outputs_for_the_registrar(stack: Graph) -> None:
    domain = DOMAIN[stack.stack]
    assert stack.outputs["dns_records"] == [
        {"name": f"{domain}.", "type": "A", "value": "203.0.113.7"},
        {"name": f"candidate.{domain}.", "type": "A", "value": "203.0.113.7"},
    ]
    assert stack.of_type(RECORD) == []


def test_a_cloud_dns_zone_gets_the_records() -> None:
    graph = deployed("production", {"alle:dnsZone": "alle-app"})
    records = graph.of_type(RECORD)
    assert {(r.inputs["name"], r.inputs["managedZone"]) for r in records} == {
        ("alle.app.", "alle-app"),
        ("candidate.alle.app.", "alle-app"),
    }
    assert {tuple(r.inputs["rrdatas"]) for r in records} == {("203.0.113.7",)}
    dns_api = next(
        a for a in graph.of_type("gcp:projects/service:Service") if a.inputs["service"] == "dns.googleapis.com"
    )
    assert all(graph.depends_on(r, dns_api) for r in records)


def test_without_a_domain_the_stack_keeps_its_run_app_url_and_has_no_edge(no_domain: Graph) -> None:
    assert [r for r in no_domain.resources if r.type.startswith("gcp:compute/") and "Global" in r.type] == [
        no_domain.one("gcp:compute/globalAddress:GlobalAddress")  # private services access only
    ]
    assert no_domain.of_type(ARMOR) == [] and no_domain.of_type(NEG) == []
    service = no_domain.one(SERVICE).inputs
    assert (service["ingress"], service["defaultUriDisabled"]) == ("INGRESS_TRAFFIC_ALL", False)
    assert no_domain.outputs["web_url"] == "https://alle-staging-web-abc123-ew.a.run.app"
    assert no_domain.outputs["dns_records"] == []


def test_the_app_trusts_as_many_forwarded_for_entries_as_its_front_ends_append(stack: Graph, no_domain: Graph) -> None:
    """Behind the load balancer the client is second from the right of X-Forwarded-For (`<client-ip>,<lb-ip>`); at
    the run.app URL, last. Every process gets the value, the same env names everywhere."""
    from test_program import env, workloads

    assert {env(w)["TRUSTED_PROXY_HOPS"] for w in workloads(stack)} == {"2"}
    assert {env(w)["TRUSTED_PROXY_HOPS"] for w in workloads(no_domain)} == {"1"}


# The policy rule -------------------------------------------------------------------------------------------------


def as_policy(graph: Graph) -> list[rules.PolicyResource]:
    return [
        rules.PolicyResource(type=r.type, name=r.name, props=copy.deepcopy(r.inputs), protect=r.protect)
        for r in graph.custom()
    ]


def test_both_stacks_pass_the_stack_rules(stack: Graph, no_domain: Graph) -> None:
    assert rules.stack_violations(as_policy(stack)) == []
    assert rules.stack_violations(as_policy(no_domain)) == []


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ingress", "INGRESS_TRAFFIC_ALL", "its ingress is 'INGRESS_TRAFFIC_ALL'"),
        ("defaultUriDisabled", False, "still exposes its run.app URL"),
    ],
)
def test_a_domain_stack_that_exposes_run_app_breaks_the_rule(
    production: Graph, key: str, value: object, message: str
) -> None:
    resources = as_policy(production)
    next(r for r in resources if r.type == SERVICE).props[key] = value
    [(rule, found)] = rules.stack_violations(resources)
    assert rule == "run-url-closed-behind-load-balancer" and message in found


def test_the_pack_reports_the_stack_rule_through_crossguard(production: Graph) -> None:
    resources = as_policy(production)
    next(r for r in resources if r.type == SERVICE).props["ingress"] = "INGRESS_TRAFFIC_ALL"

    class Seen:
        def __init__(self, r: rules.PolicyResource) -> None:
            self.resource_type, self.name, self.props = r.type, r.name, r.props
            self.opts = type("Opts", (), {"protect": r.protect})()

    policy = next(p for p in policies() if p.name == "run-url-closed-behind-load-balancer")
    assert isinstance(policy, StackValidationPolicy) and policy.validate is not None
    reported: list[str] = []
    seen: list[Any] = [Seen(r) for r in resources]
    args = StackValidationArgs(resources=seen)
    policy.validate(args, lambda message, urn: reported.append(message))
    assert len(reported) == 1 and "INGRESS_TRAFFIC_ALL" in reported[0]


@pytest.mark.parametrize(
    ("stack", "overrides", "sentence"),
    [
        ("staging", {"domain": "Alle.App"}, "alle:domain is 'Alle.App'; allowed: empty or a lowercase DNS name."),
        ("staging", {"domain": "", "dnsZone": "alle-app"}, "alle:dnsZone is 'alle-app'; a Cloud DNS zone needs"),
        ("staging", {"authRateLimitIntervalSec": "45"}, "alle:authRateLimitIntervalSec is '45'; allowed: 10, 30, 60"),
        ("staging", {"wafRules": '["sqli-v1"]'}, "alle:wafRules is '[\"sqli-v1\"]'; allowed: a list of Cloud Armor"),
        (
            "production",
            {"wafRules": '["sqli-v33-stable", "methodenforcement-v33-stable"]'},
            "methodenforcement aside (it refuses PATCH and DELETE)",
        ),
        ("staging", {"wafSensitivity": "5"}, "alle:wafSensitivity is '5'; allowed: a whole number from 1 to 4."),
        ("production", {"wafPreview": "true"}, "alle:wafPreview is 'true'; production enforces the OWASP rules"),
        ("staging", {"webTraffic": "150"}, "alle:webTraffic is '150'; allowed: a whole number from 0 to 100."),
        ("staging", {"billingAccount": "acct-1"}, "alle:billingAccount is 'acct-1'; allowed: empty or a billing"),
        ("staging", {"alertEmails": '["oncall"]'}, "alle:alertEmails is '[\"oncall\"]'; allowed: a list of email"),
    ],
)
def test_bad_edge_delivery_or_alerting_value_gives_one_clear_sentence(
    stack: str, overrides: dict[str, str], sentence: str
) -> None:
    from test_config import error_of

    assert sentence in error_of(stack, **overrides)
