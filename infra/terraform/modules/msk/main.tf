# MSK: 3 brokers in 3 AZs, replication factor 3 and min ISR 2, TLS in transit, KMS at rest.
# Clients authenticate with IAM (services via IRSA) or SCRAM (the IoT Core topic rule).
locals {
  # Broker-wide defaults. Per-topic retention overrides (see var.topics) are applied by the
  # topic provisioning job, because MSK configurations only hold broker properties.
  server_properties = {
    "auto.create.topics.enable"                = "false"
    "default.replication.factor"               = "3"
    "min.insync.replicas"                      = "2"
    "unclean.leader.election.enable"           = "false"
    "num.partitions"                           = "6"
    "log.retention.hours"                      = tostring(var.default_retention_hours)
    "log.retention.check.interval.ms"          = "300000"
    "offsets.topic.replication.factor"         = "3"
    "transaction.state.log.replication.factor" = "3"
    "transaction.state.log.min.isr"            = "2"
    "group.initial.rebalance.delay.ms"         = "3000"
    "message.max.bytes"                        = "1048588"
    "delete.topic.enable"                      = "true"
  }
}

resource "aws_msk_configuration" "this" {
  name              = "${var.name}-brokers"
  kafka_versions    = [var.kafka_version]
  description       = "Replication 3, min ISR 2, no unclean leader election, explicit topics only"
  server_properties = join("\n", [for k in sort(keys(local.server_properties)) : "${k} = ${local.server_properties[k]}"])
}

resource "aws_security_group" "brokers" {
  name        = "${var.name}-msk"
  description = "MSK brokers: Kafka from inside the VPC only"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "kafka" {
  for_each          = toset(["9096", "9098"])
  security_group_id = aws_security_group.brokers.id
  description       = "Kafka SASL/SCRAM (9096) and SASL/IAM (9098) over TLS from the VPC"
  cidr_ipv4         = var.vpc_cidr_block
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
}

resource "aws_vpc_security_group_egress_rule" "vpc" {
  security_group_id = aws_security_group.brokers.id
  description       = "Replies and replication inside the VPC"
  cidr_ipv4         = var.vpc_cidr_block
  ip_protocol       = "-1"
}

resource "aws_cloudwatch_log_group" "brokers" {
  name              = "/msk/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_msk_cluster" "this" {
  cluster_name           = var.name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = var.broker_count
  enhanced_monitoring    = "PER_TOPIC_PER_PARTITION"

  broker_node_group_info {
    instance_type   = var.broker_instance_type
    client_subnets  = var.subnet_ids
    security_groups = [aws_security_group.brokers.id]
    storage_info {
      ebs_storage_info {
        volume_size = var.broker_volume_gb
        provisioned_throughput {
          enabled = false
        }
      }
    }
    connectivity_info {
      public_access {
        type = "DISABLED"
      }
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = var.kms_key_arn
    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  client_authentication {
    unauthenticated = false
    sasl {
      iam   = true
      scram = true
    }
  }

  open_monitoring {
    prometheus {
      jmx_exporter {
        enabled_in_broker = true
      }
      node_exporter {
        enabled_in_broker = true
      }
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.brokers.name
      }
    }
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.broker_count % length(var.subnet_ids) == 0
      error_message = "MSK needs a broker count that is a multiple of the number of client subnets (one per AZ)."
    }
  }
}

resource "aws_msk_scram_secret_association" "this" {
  count           = length(var.scram_secret_arns) > 0 ? 1 : 0
  cluster_arn     = aws_msk_cluster.this.arn
  secret_arn_list = var.scram_secret_arns
}
