"""The custom domain in front of the web service: a global external Application Load Balancer with a serverless
NEG, a Google-managed certificate, HTTP → HTTPS, and a Cloud Armor policy (auth rate limit, OWASP rules).

`candidate.<domain>` reaches this release's tagged revision through the same load balancer and policy, so a
release is smoke-tested at its own URL before it takes traffic, even though the run.app URLs are closed.
https://cloud.google.com/load-balancing/docs/https/setting-up-https-serverless
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from components.config import EdgeConfig

compute = gcp.compute
#: Cloud Armor's default rule: the lowest priority, matching every source address.
DEFAULT_RULE_PRIORITY = 2147483647
AUTH_PATH = "/v1/auth/"
CANDIDATE_HOST = "candidate"


@dataclass
class EdgeArgs:
    project: str
    region: str
    prefix: str
    config: EdgeConfig
    #: The Cloud Run service's name, known before it exists so the policy rules can match the NEG to it.
    service_name: str
    #: This release's traffic tag (components/delivery.py).
    candidate_tag: str
    depends_on: list[pulumi.Resource]


def armor_rules(config: EdgeConfig) -> list[compute.SecurityPolicyRuleArgs]:
    """Rate limit on auth first, then the OWASP rules, then allow the rest. Lower priority numbers go first."""
    # Throttle per client IP: over the threshold a client gets 429 until its rate drops
    # (https://cloud.google.com/armor/docs/rate-limiting-overview, .../configure-rate-limiting).
    rules = [
        compute.SecurityPolicyRuleArgs(
            priority=1000,
            description=f"At most {config.auth_rate_limit} auth requests per {config.auth_rate_limit_interval_sec}s "
            "per client IP",
            action="throttle",
            match=compute.SecurityPolicyRuleMatchArgs(
                # On the decoded path, as the app routes it: `/v1/%61uth/signup` reaches the sign-up handler, and
                # the raw path would not have matched (https://cloud.google.com/armor/docs/rules-language-reference,
                # urlDecode()).
                expr=compute.SecurityPolicyRuleMatchExprArgs(
                    expression=f"request.path.urlDecode().lower().startsWith('{AUTH_PATH}')"
                )
            ),
            rate_limit_options=compute.SecurityPolicyRuleRateLimitOptionsArgs(
                conform_action="allow",
                exceed_action="deny(429)",
                enforce_on_key="IP",
                rate_limit_threshold=compute.SecurityPolicyRuleRateLimitOptionsRateLimitThresholdArgs(
                    count=config.auth_rate_limit, interval_sec=config.auth_rate_limit_interval_sec
                ),
            ),
        )
    ]
    # Preconfigured WAF rules; in preview they only log what they would have denied
    # (https://cloud.google.com/armor/docs/configure-waf, https://cloud.google.com/armor/docs/rule-tuning).
    rules += [
        compute.SecurityPolicyRuleArgs(
            priority=2000 + index,
            description=f"OWASP CRS 3.3 {rule}",
            action="deny(403)",
            preview=config.waf_preview,
            match=compute.SecurityPolicyRuleMatchArgs(
                expr=compute.SecurityPolicyRuleMatchExprArgs(
                    expression=f"evaluatePreconfiguredWaf('{rule}', {{'sensitivity': {config.waf_sensitivity}}})"
                )
            ),
        )
        for index, rule in enumerate(config.waf_rules)
    ]
    rules.append(
        compute.SecurityPolicyRuleArgs(
            priority=DEFAULT_RULE_PRIORITY,
            description="Default: allow",
            action="allow",
            match=compute.SecurityPolicyRuleMatchArgs(
                versioned_expr="SRC_IPS_V1", config=compute.SecurityPolicyRuleMatchConfigArgs(src_ip_ranges=["*"])
            ),
        )
    )
    return rules


class Edge(pulumi.ComponentResource):
    def __init__(self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("alle:edge:Edge", name, None, opts)
        domain = args.config.domain
        candidate_domain = f"{CANDIDATE_HOST}.{domain}"
        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        self.address = compute.GlobalAddress(
            f"{name}-edge-ip",
            compute.GlobalAddressArgs(
                project=args.project, name=f"{args.prefix}-edge", address_type="EXTERNAL", ip_version="IPV4"
            ),
            opts=child,
        )
        # A certificate's domains cannot change in place; a new name per domain set lets the new one be created
        # before the old one is deleted (https://cloud.google.com/load-balancing/docs/ssl-certificates/google-managed-certs).
        digest = hashlib.sha256(f"{domain},{candidate_domain}".encode()).hexdigest()[:8]
        self.certificate = compute.ManagedSslCertificate(
            f"{name}-cert",
            compute.ManagedSslCertificateArgs(
                project=args.project,
                name=f"{args.prefix}-{digest}",
                managed=compute.ManagedSslCertificateManagedArgs(domains=[domain, candidate_domain]),
            ),
            opts=child,
        )
        self.policy = compute.SecurityPolicy(
            f"{name}-armor",
            compute.SecurityPolicyArgs(
                project=args.project,
                name=f"{args.prefix}-armor",
                description="Alle web: auth rate limit and OWASP rules",
                type="CLOUD_ARMOR",
                rules=armor_rules(args.config),
            ),
            opts=child,
        )
        self.backend = self._backend(name, args, "web", tag=None, child=child)
        # The candidate NEG names the tag, so each release gets a new one before the old one goes.
        self.candidate_backend = self._backend(name, args, "candidate", tag=args.candidate_tag, child=child)
        self.url_map = compute.URLMap(
            f"{name}-lb",
            compute.URLMapArgs(
                project=args.project,
                name=f"{args.prefix}-lb",
                default_service=self.backend.id,
                host_rules=[compute.URLMapHostRuleArgs(hosts=[candidate_domain], path_matcher=CANDIDATE_HOST)],
                path_matchers=[
                    compute.URLMapPathMatcherArgs(name=CANDIDATE_HOST, default_service=self.candidate_backend.id)
                ],
            ),
            opts=child,
        )
        # Without a policy the proxy takes Google's default: the COMPATIBLE profile, from TLS 1.0
        # (https://cloud.google.com/load-balancing/docs/ssl-policies-concepts). MODERN from TLS 1.2 is what every
        # browser and HTTP library still supported speaks.
        self.tls = compute.SSLPolicy(
            f"{name}-tls",
            compute.SSLPolicyArgs(
                project=args.project, name=f"{args.prefix}-tls", profile="MODERN", min_tls_version="TLS_1_2"
            ),
            opts=child,
        )
        https_proxy = compute.TargetHttpsProxy(
            f"{name}-https",
            compute.TargetHttpsProxyArgs(
                project=args.project,
                name=f"{args.prefix}-https",
                url_map=self.url_map.id,
                ssl_certificates=[self.certificate.id],
                ssl_policy=self.tls.id,
            ),
            opts=child,
        )
        self._forwarding_rule(name, args, "https", "443", https_proxy.id, child)
        # Port 80 only redirects (https://cloud.google.com/load-balancing/docs/https/setting-up-http-https-redirect).
        redirect = compute.URLMap(
            f"{name}-redirect",
            compute.URLMapArgs(
                project=args.project,
                name=f"{args.prefix}-redirect",
                default_url_redirect=compute.URLMapDefaultUrlRedirectArgs(
                    https_redirect=True, redirect_response_code="MOVED_PERMANENTLY_DEFAULT", strip_query=False
                ),
            ),
            opts=child,
        )
        http_proxy = compute.TargetHttpProxy(
            f"{name}-http",
            compute.TargetHttpProxyArgs(project=args.project, name=f"{args.prefix}-http", url_map=redirect.id),
            opts=child,
        )
        self._forwarding_rule(name, args, "http", "80", http_proxy.id, child)
        ip = self.address.address
        self.dns_records: list[dict[str, pulumi.Input[str]]] = [
            {"name": f"{host}.", "type": "A", "value": ip} for host in (domain, candidate_domain)
        ]
        if args.config.dns_zone:
            for host in (domain, candidate_domain):
                gcp.dns.RecordSet(
                    f"{name}-dns-{host}",
                    gcp.dns.RecordSetArgs(
                        project=args.project,
                        managed_zone=args.config.dns_zone,
                        name=f"{host}.",
                        type="A",
                        ttl=300,
                        rrdatas=[ip],
                    ),
                    opts=child,
                )
        self.url = f"https://{domain}"
        self.candidate_url = f"https://{candidate_domain}"
        self.register_outputs({"url": self.url, "candidate_url": self.candidate_url, "dns_records": self.dns_records})

    def _backend(
        self, name: str, args: EdgeArgs, role: str, tag: str | None, child: pulumi.ResourceOptions
    ) -> compute.BackendService:
        neg = compute.RegionNetworkEndpointGroup(
            f"{name}-{role}-neg",
            compute.RegionNetworkEndpointGroupArgs(
                project=args.project,
                region=args.region,
                name=f"{args.service_name}-{tag}" if tag else f"{args.service_name}-neg",
                network_endpoint_type="SERVERLESS",
                cloud_run=compute.RegionNetworkEndpointGroupCloudRunArgs(service=args.service_name, tag=tag),
            ),
            opts=child,
        )
        # Serverless NEG backends take no health check, port or timeout
        # (https://cloud.google.com/load-balancing/docs/negs/serverless-neg-concepts#limitations).
        return compute.BackendService(
            f"{name}-{role}-backend",
            compute.BackendServiceArgs(
                project=args.project,
                name=f"{args.prefix}-{role}",
                load_balancing_scheme="EXTERNAL_MANAGED",
                protocol="HTTPS",
                security_policy=self.policy.id,
                log_config=compute.BackendServiceLogConfigArgs(enable=True, sample_rate=1.0),
                backends=[compute.BackendServiceBackendArgs(group=neg.id)],
            ),
            opts=child,
        )

    def _forwarding_rule(
        self, name: str, args: EdgeArgs, role: str, port: str, target: pulumi.Input[str], child: pulumi.ResourceOptions
    ) -> None:
        compute.GlobalForwardingRule(
            f"{name}-{role}-rule",
            compute.GlobalForwardingRuleArgs(
                project=args.project,
                name=f"{args.prefix}-{role}",
                load_balancing_scheme="EXTERNAL_MANAGED",
                ip_protocol="TCP",
                port_range=port,
                ip_address=self.address.id,
                target=target,
            ),
            opts=child,
        )
