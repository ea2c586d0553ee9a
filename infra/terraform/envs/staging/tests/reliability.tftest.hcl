# Plans the whole staging environment offline against a mocked AWS provider (no credentials,
# no API calls) and asserts the reliability properties on the values Terraform resolved
# through every module. Run: terraform init -backend=false -plugin-dir=... && terraform test
mock_provider "aws" {
  mock_data "aws_availability_zones" {
    defaults = {
      names = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    }
  }
  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }
  mock_data "aws_secretsmanager_random_password" {
    defaults = {
      random_password = "MockPasswordOnlyForPlanTests0123456789"
    }
  }
  mock_data "aws_region" {
    defaults = {
      name = "eu-west-1"
    }
  }
  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }
}

run "reliability_properties_hold_after_planning" {
  command = plan

  assert {
    condition     = output.reliability.vpc.azs == 3 && output.reliability.vpc.private_azs == 3 && output.reliability.vpc.data_azs == 3
    error_message = "every subnet tier must span 3 availability zones"
  }
  assert {
    condition     = output.reliability.vpc.nat_gateways == 1
    error_message = "staging runs 1 NAT gateway(s)"
  }
  assert {
    condition     = output.reliability.msk.broker_count == 3 && output.reliability.msk.client_subnets == 3
    error_message = "MSK runs 3 brokers, one per AZ"
  }
  assert {
    condition     = output.reliability.msk.server_properties["default.replication.factor"] == "3" && output.reliability.msk.server_properties["min.insync.replicas"] == "2"
    error_message = "MSK topics replicate 3 times with min ISR 2"
  }
  assert {
    condition     = output.reliability.msk.client_broker == "TLS" && output.reliability.msk.in_cluster_tls && !output.reliability.msk.unauthenticated
    error_message = "MSK encrypts in transit and requires authentication"
  }
  assert {
    condition     = output.reliability.rds.multi_az && output.reliability.rds.storage_encrypted && output.reliability.rds.deletion_protection && output.reliability.rds.performance_insights
    error_message = "RDS is Multi-AZ, encrypted, deletion-protected, with Performance Insights"
  }
  assert {
    condition     = output.reliability.rds.backup_retention_days >= 7 && output.reliability.rds.backup_retention_days >= 7
    error_message = "RDS keeps backups for 7 days in staging"
  }
  assert {
    condition     = output.reliability.rds.replica_count >= 1 && output.reliability.rds.replicas_encrypted
    error_message = "RDS has an encrypted read replica"
  }
  assert {
    condition     = output.reliability.influxdb.deployment_type == "WITH_MULTIAZ_STANDBY" && !output.reliability.influxdb.publicly_accessible
    error_message = "InfluxDB runs with a Multi-AZ standby and is private"
  }
  assert {
    condition     = output.reliability.redis.automatic_failover && output.reliability.redis.multi_az && output.reliability.redis.nodes >= 2 && output.reliability.redis.node_azs >= 2
    error_message = "Redis fails over automatically across AZs"
  }
  assert {
    condition     = output.reliability.redis.at_rest_encryption && output.reliability.redis.transit_encryption
    error_message = "Redis encrypts at rest and in transit"
  }
  assert {
    condition     = !output.reliability.eks.public_endpoint && alltrue([for n in values(output.reliability.eks.min_nodes) : n >= 3])
    error_message = "EKS API is private and every node group keeps a node per AZ"
  }
  assert {
    condition     = output.reliability.topics["meter-readings"].partitions == 6
    error_message = "meter-readings keeps the 6 partitions of schemas/topics.py"
  }
}
