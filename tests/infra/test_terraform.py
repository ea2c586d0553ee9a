"""infra/terraform: formatted, valid for both environments against the AWS provider 5.100.0
(offline, from the plugin mirror), checkov-clean apart from documented exceptions, and the
reliability properties of the architecture (Multi-AZ, replication 3 / min ISR 2, automatic
failover, encryption, backups, deletion protection) hold in the HCL."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from schemas.topics import TOPICS
from tests.infra import hcl
from tests.infra.conftest import ROOT, TERRAFORM_DIR, TF_PLUGIN_MIRROR, run

ENVS = ("staging", "production")
CHECKOV_EXCEPTIONS_DOC = ROOT / "docs" / "decisions" / "0603-checkov-accepted-findings.md"


# --- terraform itself -------------------------------------------------------------------


def test_terraform_files_are_formatted(terraform_bin: str) -> None:
    out = run([terraform_bin, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)])
    assert out.returncode == 0, f"run `terraform fmt -recursive infra/terraform`:\n{out.stdout}{out.stderr}"


def _init(terraform_bin: str, root: Path) -> None:
    if (root / ".terraform").is_dir():
        return
    init = run(
        [terraform_bin, "init", "-backend=false", "-input=false", f"-plugin-dir={TF_PLUGIN_MIRROR}", "-no-color"],
        cwd=root,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    assert "hashicorp/aws v5.100.0" in init.stdout, init.stdout


@pytest.mark.parametrize("environment", ENVS)
def test_environment_validates_against_aws_provider_5_100(
    terraform_bin: str, terraform_tree: Path, environment: str
) -> None:
    root = terraform_tree / "envs" / environment
    _init(terraform_bin, root)
    validate = run([terraform_bin, "validate", "-json", "-no-color"], cwd=root)
    result = json.loads(validate.stdout)
    assert result["valid"], json.dumps(result["diagnostics"], indent=2)
    assert result["error_count"] == 0


@pytest.mark.parametrize("environment", ENVS)
def test_environment_plans_offline_and_keeps_its_reliability_properties(
    terraform_bin: str, terraform_tree: Path, environment: str
) -> None:
    """`terraform test` plans the whole environment against a mocked AWS provider and asserts
    Multi-AZ, replication 3 / min ISR 2, failover, encryption and backups on the resolved
    values (envs/<env>/tests/reliability.tftest.hcl). Planning also catches what validate
    cannot, e.g. for_each keys that are only known after apply."""
    root = terraform_tree / "envs" / environment
    _init(terraform_bin, root)
    out = run([terraform_bin, "test", "-no-color"], cwd=root, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed, 0 failed" in out.stdout, out.stdout


def test_provider_constraint_admits_5_100_everywhere() -> None:
    for versions in TERRAFORM_DIR.rglob("versions.tf"):
        text = versions.read_text()
        constraint = re.search(r'version\s*=\s*"([^"]+)"\s*\n\s*}\s*\n\s*}', text)
        assert constraint, f"{versions}: no aws provider version constraint"
        assert constraint.group(1) == ">= 5.100.0, < 6.0.0", f"{versions}: {constraint.group(1)}"


# --- checkov ----------------------------------------------------------------------------


def _accepted_findings() -> list[tuple[str, str]]:
    """(check id, resource address prefix) rows of the decision record's table."""
    rows = []
    for line in CHECKOV_EXCEPTIONS_DOC.read_text().splitlines():
        m = re.match(r"^\|\s*`(CKV2?_AWS_\d+)`\s*\|\s*`([^`]+)`\s*\|", line)
        if m:
            rows.append((m.group(1), m.group(2)))
    return rows


@pytest.fixture(scope="module")
def checkov_report(checkov_bin: Path) -> dict[str, Any]:
    out = run(
        [
            str(checkov_bin),
            "-d",
            str(TERRAFORM_DIR),
            "--framework",
            "terraform",
            "--quiet",
            "--compact",
            "-o",
            "json",
            "--skip-download",
        ],
        timeout=600,
    )
    assert out.stdout.strip(), f"checkov printed nothing:\n{out.stderr[-2000:]}"
    report = json.loads(out.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_parses_every_module(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] >= 100, summary  # every module is scanned through the env roots
    assert summary["passed"] > 300, summary


def test_checkov_finds_nothing_beyond_the_documented_exceptions(checkov_report: dict[str, Any]) -> None:
    accepted = _accepted_findings()
    assert 0 < len(accepted) <= 15, "the exception list must stay small and documented"
    unexpected = [
        f"{f['check_id']} {f['resource']} ({f['file_path']}): {f['check_name']}"
        for f in checkov_report["results"]["failed_checks"]
        if not any(f["check_id"] == cid and f["resource"].startswith(prefix) for cid, prefix in accepted)
    ]
    assert not unexpected, (
        "fix these or document them in " + CHECKOV_EXCEPTIONS_DOC.name + ":\n" + "\n".join(unexpected)
    )


def test_every_documented_checkov_exception_is_still_needed(checkov_report: dict[str, Any]) -> None:
    failed = checkov_report["results"]["failed_checks"]
    stale = [
        (cid, prefix)
        for cid, prefix in _accepted_findings()
        if not any(f["check_id"] == cid and f["resource"].startswith(prefix) for f in failed)
    ]
    assert not stale, f"remove exceptions that no longer match a finding: {stale}"


# --- reliability properties in the HCL ----------------------------------------------------


def _resource(module: str, rtype: str, name: str) -> dict[str, Any]:
    return hcl.module(module)["resource"][rtype][name]


def _validated_minimum(module: str, variable: str) -> int:
    """The lower bound a variable's validation enforces (``var.x >= N``)."""
    var = hcl.module(module)["variable"][variable]
    conditions = [v["condition"] for v in var.get("validation", [])]
    bounds = [int(m.group(1)) for c in conditions if (m := re.search(rf"var\.{variable}\s*>=\s*(\d+)", c))]
    assert bounds, f"modules/{module}: variable {variable} has no '>= N' validation"
    return max(bounds)


def test_vpc_spans_three_availability_zones() -> None:
    assert _validated_minimum("vpc", "az_count") >= 3
    platform = hcl.module("platform")["module"]
    assert platform["vpc"]["az_count"] == 3
    vpc = hcl.module("vpc")
    for tier in ("public", "private", "data"):
        assert vpc["resource"]["aws_subnet"][tier]["count"] == "${var.az_count}"
        assert "local.azs[count.index]" in vpc["resource"]["aws_subnet"][tier]["availability_zone"]


def test_msk_has_three_brokers_replication_three_and_min_isr_two() -> None:
    msk = hcl.module("msk")
    props = msk["locals"]["server_properties"]
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["unclean.leader.election.enable"] == "false"
    assert props["auto.create.topics.enable"] == "false"
    assert _validated_minimum("msk", "broker_count") >= 3
    assert hcl.module("platform")["module"]["msk"]["broker_count"] == 3
    cluster = msk["resource"]["aws_msk_cluster"]["this"]
    assert cluster["number_of_broker_nodes"] == "${var.broker_count}"
    assert "aws_msk_configuration.this.arn" in hcl.one(cluster["configuration_info"])["arn"]


def test_msk_encrypts_in_transit_and_at_rest_and_requires_authentication() -> None:
    cluster = _resource("msk", "aws_msk_cluster", "this")
    enc = hcl.one(cluster["encryption_info"])
    assert enc["encryption_at_rest_kms_key_arn"] == "${var.kms_key_arn}"
    transit = hcl.one(enc["encryption_in_transit"])
    assert transit == {"client_broker": "TLS", "in_cluster": True}
    auth = hcl.one(cluster["client_authentication"])
    assert auth["unauthenticated"] is False
    assert hcl.one(auth["sasl"]) == {"iam": True, "scram": True}


def test_terraform_topics_match_the_topic_registry() -> None:
    topics = hcl.module("platform")["locals"]["topics"]
    for name, topic in TOPICS.items():
        assert name in topics, f"{name} (schemas/topics.py) missing from modules/platform topics"
        assert topics[name]["partitions"] == topic.partitions, name
    extra = set(topics) - set(TOPICS)
    assert extra == {"meter-readings-raw"}, f"topics unknown to schemas/topics.py: {extra}"


def test_rds_is_multi_az_encrypted_backed_up_and_protected_with_a_read_replica() -> None:
    primary = _resource("rds", "aws_db_instance", "primary")
    assert primary["multi_az"] is True
    assert primary["storage_encrypted"] is True
    assert primary["kms_key_id"] == "${var.kms_key_arn}"
    assert primary["deletion_protection"] is True
    assert primary["skip_final_snapshot"] is False
    assert primary["publicly_accessible"] is False
    assert primary["performance_insights_enabled"] is True
    assert primary["manage_master_user_password"] is True
    assert primary["backup_retention_period"] == "${var.backup_retention_days}"
    assert _validated_minimum("rds", "backup_retention_days") >= 7
    for environment in ENVS:
        days = hcl.env(environment)["module"]["platform"]["rds_backup_retention_days"]
        assert days >= 7, f"{environment}: backups kept {days} days"
    replica = _resource("rds", "aws_db_instance", "replica")
    assert "aws_db_instance.primary.identifier" in replica["replicate_source_db"]
    assert replica["storage_encrypted"] is True
    assert replica["deletion_protection"] is True
    assert _validated_minimum("rds", "read_replica_count") >= 1
    params = {p["name"]: p["value"] for p in _resource("rds", "aws_db_parameter_group", "this")["parameter"]}
    assert params["rds.force_ssl"] == "1"


def test_influxdb_is_timestream_with_a_multi_az_standby_and_private() -> None:
    inst = _resource("timestream_influxdb", "aws_timestreaminfluxdb_db_instance", "this")
    assert inst["deployment_type"] == "WITH_MULTIAZ_STANDBY"
    assert inst["publicly_accessible"] is False
    assert "random_password" in inst["password"]  # generated, stored in Secrets Manager, never in the repo
    assert "ignore_changes" in str(inst["lifecycle"])


def test_redis_fails_over_automatically_across_azs_and_is_encrypted() -> None:
    group = _resource("elasticache", "aws_elasticache_replication_group", "this")
    assert group["automatic_failover_enabled"] is True
    assert group["multi_az_enabled"] is True
    assert group["at_rest_encryption_enabled"] is True
    assert group["transit_encryption_enabled"] is True
    assert group["kms_key_id"] == "${var.kms_key_arn}"
    assert group["snapshot_retention_limit"] == "${var.snapshot_retention_days}"
    assert hcl.module("platform")["module"]["redis"]["node_count"] >= 2


def test_eks_is_private_with_encrypted_secrets_and_nodes_in_every_az() -> None:
    cluster = _resource("eks", "aws_eks_cluster", "this")
    vpc = hcl.one(cluster["vpc_config"])
    assert vpc["endpoint_public_access"] is False
    assert vpc["endpoint_private_access"] is True
    assert hcl.one(cluster["encryption_config"])["resources"] == ["secrets"]
    assert set(cluster["enabled_cluster_log_types"]) >= {"api", "audit", "authenticator"}
    for environment in ENVS:
        groups = hcl.env(environment)["module"]["platform"]["eks_node_groups"]
        assert groups, environment
        for name, group in groups.items():
            assert group["min_size"] >= 3, f"{environment}/{name}: one node per AZ at least"
    template = _resource("eks", "aws_launch_template", "node")
    assert hcl.one(template["metadata_options"])["http_tokens"] == "required"


def test_iot_rule_forwards_meter_topics_to_msk_over_tls() -> None:
    rule = _resource("iot", "aws_iot_topic_rule", "meters_to_msk")
    assert rule["enabled"] is True
    assert "FROM '${var.mqtt_topic_filter}'" in rule["sql"]
    assert hcl.module("iot")["variable"]["mqtt_topic_filter"]["default"] == "meters/#"
    kafka = hcl.one(rule["kafka"])
    assert kafka["topic"] == "${var.kafka_topic}"
    props = kafka["client_properties"]
    assert props["security.protocol"] == "SASL_SSL"
    assert props["acks"] == "all"
    assert "get_secret(" in props["sasl.scram.password"]  # the password is never in the rule
    assert "aws_iot_topic_rule_destination.msk.arn" in kafka["destination_arn"]
    assert "error_action" in rule
    platform_iot = hcl.module("platform")["module"]["iot"]
    assert platform_iot["mqtt_topic_filter"] == "meters/#"


def test_s3_buckets_are_private_versioned_encrypted_with_lifecycle_rules() -> None:
    s3 = hcl.module("s3")
    assert set(s3["variable"]["buckets"]["default"]) == {"raw-archive", "model-artifacts"}
    res = s3["resource"]
    for suffix in ("this", "access_logs"):
        pab = res["aws_s3_bucket_public_access_block"][suffix]
        assert all(
            pab[k] is True
            for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
        )
        assert hcl.one(res["aws_s3_bucket_versioning"][suffix]["versioning_configuration"])["status"] == "Enabled"
        sse = hcl.one(
            hcl.one(res["aws_s3_bucket_server_side_encryption_configuration"][suffix]["rule"])[
                "apply_server_side_encryption_by_default"
            ]
        )
        assert sse["sse_algorithm"] == "aws:kms"
    rule = hcl.one(res["aws_s3_bucket_lifecycle_configuration"]["this"]["rule"])
    assert rule["status"] == "Enabled"
    assert "noncurrent_version_expiration" in rule
    raw = s3["variable"]["buckets"]["default"]["raw-archive"]
    assert 0 < raw["infrequent_access_after_days"] < raw["glacier_after_days"] < raw["expire_after_days"]


def test_secrets_are_encrypted_with_the_environment_key_and_never_literal() -> None:
    text = "\n".join(p.read_text() for p in (TERRAFORM_DIR / "modules").rglob("*.tf"))
    assert not re.search(r'(password|secret_string|auth_token)\s*=\s*"[^$"]', text), "literal secret in HCL"
    for module, name in (
        ("secrets", "generated"),
        ("secrets", "msk_scram"),
        ("elasticache", "auth"),
        ("timestream_influxdb", "admin"),
    ):
        assert _resource(module, "aws_secretsmanager_secret", name)["kms_key_id"] == "${var.kms_key_arn}"
    assert _resource("kms", "aws_kms_key", "this")["enable_key_rotation"] is True


def test_cloudwatch_alarms_cover_every_managed_store_and_notify_sns() -> None:
    alarms = hcl.module("alarms")
    text = json.dumps(alarms["locals"]["alarms"])
    for namespace in ("AWS/Kafka", "AWS/RDS", "AWS/ElastiCache", "AWS/IoT"):
        assert namespace in text
    for metric in (
        "UnderReplicatedPartitions",
        "OfflinePartitionsCount",
        "ReplicaLag",
        "FreeStorageSpace",
        "EngineCPUUtilization",
    ):
        assert metric in text
    alarm = alarms["resource"]["aws_cloudwatch_metric_alarm"]["this"]
    assert alarm["alarm_actions"] == ["${aws_sns_topic.alarms.arn}"]
    assert "aws-managed-services.md" in alarm["alarm_description"]
    assert (ROOT / "docs" / "runbooks" / "aws-managed-services.md").exists()


def test_both_environments_use_the_same_platform_module() -> None:
    for environment in ENVS:
        module = hcl.env(environment)["module"]["platform"]
        assert module["source"] == "../../modules/platform"
        assert module["environment"] == environment
