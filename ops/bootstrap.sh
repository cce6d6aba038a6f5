#!/usr/bin/env bash
# One-time setup of a GCP project for alle's CI: Workload Identity Federation for GitHub Actions (no JSON
# keys), a deployer service account with the roles `pulumi up` needs, usable only from the named repository's
# named GitHub environment, and this environment's own Pulumi state bucket and Cloud KMS key. Each environment
# keeps its state in its own project: staging's deployer can neither read production's secrets from state nor
# rewrite it, so the approval gate in front of production holds. It also creates, once, the Artifact Registry
# repository both environments share, in a project of its own (REGISTRY): no stack declares it, so no
# `pulumi destroy` can delete production's release images; staging's deployer may push to it, production's only
# read, and each environment's Cloud Run service agent may pull from it.
#
# Usage: ops/bootstrap.sh [--dry-run] --registry-project REGISTRY PROJECT REGION OWNER/REPO ENVIRONMENT
#   ops/bootstrap.sh --registry-project alle-registry alle-staging europe-west1 example/alle staging
#   ops/bootstrap.sh --registry-project alle-registry alle-production europe-west1 example/alle production
# --dry-run prints the gcloud commands instead of running them. Running it again is safe for the registry steps.
set -euo pipefail

dry_run=false registry_project=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=true; shift ;;
    --registry-project) registry_project=$2; shift 2 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -ne 4 ] || [ -z "$registry_project" ]; then
  sed -n '11,14p' "$0" >&2
  exit 2
fi
project=$1 region=$2 repo=$3 environment=$4
if [ "$registry_project" = "$project" ]; then
  echo "--registry-project must be a project of its own, not ${project}: each deployer administers its own" \
    "project's IAM, so a registry there is not safe from that environment's deploys." >&2
  exit 2
fi

state_bucket="alle-pulumi-state-${project}"
keyring=pulumi key=state pool=github provider=github
deployer_email="alle-deployer@${project}.iam.gserviceaccount.com"
member="serviceAccount:${deployer_email}"
repository=alle
here=$(dirname "$0")

gc() {
  # Quoted for the shell, so a printed command can be pasted as it is (conditions hold quotes, spaces and ;).
  if $dry_run; then printf 'gcloud'; printf ' %q' "$@"; printf '\n'; else gcloud --quiet "$@"; fi
}

gc services enable --project "$project" iam.googleapis.com iamcredentials.googleapis.com sts.googleapis.com \
  cloudresourcemanager.googleapis.com serviceusage.googleapis.com

# State: versioned and private, in this environment's project. Secrets in it are encrypted with the KMS key below.
gc services enable --project "$project" cloudkms.googleapis.com storage.googleapis.com
gc storage buckets create "gs://${state_bucket}" --project "$project" --location "$region" \
  --uniform-bucket-level-access --public-access-prevention
gc storage buckets update "gs://${state_bucket}" --versioning
gc kms keyrings create "$keyring" --project "$project" --location "$region"
gc kms keys create "$key" --project "$project" --keyring "$keyring" --location "$region" \
  --purpose encryption --rotation-period 90d --next-rotation-time "$(date -u -d '+90 days' +%Y-%m-%dT%H:%M:%SZ)"

# One admin role per service the program declares, and IAM on the resources it creates. Compute's network admin
# role creates neither Cloud Armor policies nor SSL certificates: security admin does
# (https://cloud.google.com/armor/docs/create-security-policies). Monitoring editor covers the uptime check, alert
# policies, channels and dashboard; logging config writer the log-based metric.
gc iam service-accounts create alle-deployer --project "$project" \
  --display-name "alle deployer (GitHub Actions, ${environment})"
for role in roles/run.admin roles/cloudsql.admin roles/redis.admin roles/storage.admin \
  roles/secretmanager.admin roles/cloudscheduler.admin \
  roles/compute.networkAdmin roles/compute.securityAdmin roles/servicenetworking.networksAdmin \
  roles/serviceusage.serviceUsageAdmin roles/monitoring.editor roles/logging.configWriter \
  roles/iam.serviceAccountAdmin roles/iam.serviceAccountUser; do
  gc projects add-iam-policy-binding "$project" --member "$member" --role "$role" --condition None
done
# Project IAM only to grant what the program grants project-wide (its workloads' telemetry roles, the Service
# Networking agent's role): unconditioned, the deployer could grant itself roles/owner. Conditions on
# modifiedGrantsByRole: https://cloud.google.com/iam/docs/setting-limits-on-granting-roles.
grantable="'roles/logging.logWriter', 'roles/monitoring.metricWriter', 'roles/servicenetworking.serviceAgent'"
gc projects add-iam-policy-binding "$project" --member "$member" --role roles/resourcemanager.projectIamAdmin \
  --condition "^;^title=alle-deployer-grants;expression=api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly([${grantable}])"
gc storage buckets add-iam-policy-binding "gs://${state_bucket}" --member "$member" --role roles/storage.objectAdmin
gc kms keys add-iam-policy-binding "$key" --project "$project" --keyring "$keyring" --location "$region" \
  --member "$member" --role roles/cloudkms.cryptoKeyEncrypterDecrypter

if $dry_run; then
  number=PROJECT_NUMBER
else
  number=$(gcloud projects describe "$project" --format 'value(projectNumber)')
fi

# The shared registry. Created if absent (`create` fails on an existing repository,
# https://cloud.google.com/sdk/gcloud/reference/artifacts/repositories/create); the cleanup policies are set on
# every run, replacing what is there (https://cloud.google.com/sdk/gcloud/reference/artifacts/repositories/set-cleanup-policies;
# file format: https://cloud.google.com/artifact-registry/docs/repositories/cleanup-policy). Tags are not
# immutable: a retried release pushes its tag again, and every workload runs a digest anyway.
gc services enable --project "$registry_project" artifactregistry.googleapis.com
registry_at=(--project "$registry_project" --location "$region")
if $dry_run || ! gcloud artifacts repositories describe "$repository" "${registry_at[@]}" >/dev/null 2>&1; then
  gc artifacts repositories create "$repository" "${registry_at[@]}" --repository-format docker \
    --description "Alle release images; production runs the digests staging ran."
fi
gc artifacts repositories set-cleanup-policies "$repository" "${registry_at[@]}" \
  --policy "${here}/registry-cleanup-policy.json" --no-dry-run
# Staging builds and pushes (writer); production never builds and deploys the promoted digest, which needs read
# access on the repository (https://cloud.google.com/artifact-registry/docs/integrate-cloud-run, "Permissions
# required to deploy"; roles: https://cloud.google.com/iam/docs/roles-permissions/artifactregistry).
if [ "$environment" = production ]; then registry_role=roles/artifactregistry.reader; else
  registry_role=roles/artifactregistry.writer; fi
gc artifacts repositories add-iam-policy-binding "$repository" "${registry_at[@]}" \
  --member "$member" --role "$registry_role"
# Cloud Run's service agent imports the image when it deploys a revision; for a repository in another project it
# needs Artifact Registry Reader there (same page). It exists once the Run API is enabled; `identity create`
# makes sure of it (https://cloud.google.com/sdk/gcloud/reference/beta/services/identity/create).
gc services enable --project "$project" run.googleapis.com
gc beta services identity create --service run.googleapis.com --project "$project"
gc artifacts repositories add-iam-policy-binding "$repository" "${registry_at[@]}" \
  --member "serviceAccount:service-${number}@serverless-robot-prod.iam.gserviceaccount.com" \
  --role roles/artifactregistry.reader

# GitHub's OIDC tokens, accepted only from this repository and this GitHub environment.
gc iam workload-identity-pools create "$pool" --project "$project" --location global --display-name "GitHub Actions"
gc iam workload-identity-pools providers create-oidc "$provider" --project "$project" --location global \
  --workload-identity-pool "$pool" --issuer-uri "https://token.actions.githubusercontent.com" \
  --attribute-mapping "google.subject=assertion.sub,attribute.repository=assertion.repository,attribute.environment=assertion.environment" \
  --attribute-condition "assertion.repository == '${repo}' && assertion.environment == '${environment}'"
gc iam service-accounts add-iam-policy-binding "$deployer_email" --project "$project" \
  --role roles/iam.workloadIdentityUser \
  --member "principalSet://iam.googleapis.com/projects/${number}/locations/global/workloadIdentityPools/${pool}/attribute.environment/${environment}"

cat <<TXT
Set these variables on the GitHub environment '${environment}':
  GCP_WORKLOAD_IDENTITY_PROVIDER=projects/${number}/locations/global/workloadIdentityPools/${pool}/providers/${provider}
  GCP_DEPLOYER=${deployer_email}
  PULUMI_BACKEND_URL=gs://${state_bucket}
  PULUMI_SECRETS_PROVIDER=gcpkms://projects/${project}/locations/${region}/keyRings/${keyring}/cryptoKeys/${key}
and this secret on it (every config key Pulumi.yaml declares secret):
  MAIL_API_KEY=<the SendGrid API key for ${environment}>
TXT
