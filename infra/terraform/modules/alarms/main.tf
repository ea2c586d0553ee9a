# CloudWatch alarms on the managed services (what Prometheus cannot see from inside the
# cluster). Application alerts live in deploy/prometheus/alerts.yml. Every alarm notifies an
# SNS topic that pages through the on-call integration subscribed to it.
resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = var.kms_key_arn
  tags              = var.tags
}

locals {
  broker_ids    = [for i in range(1, var.msk_broker_count + 1) : tostring(i)]
  redis_nodes   = [for i in range(1, var.redis_node_count + 1) : format("%s-%03d", var.redis_replication_group_id, i)]
  rds_instances = concat([var.rds_primary_identifier], var.rds_replica_identifiers)

  alarms = merge(
    {
      msk-offline-partitions = {
        description = "MSK has offline partitions: producers and consumers of them are stuck"
        namespace   = "AWS/Kafka"
        metric      = "OfflinePartitionsCount"
        dimensions  = { "Cluster Name" = var.msk_cluster_name }
        statistic   = "Maximum"
        comparison  = "GreaterThanThreshold"
        threshold   = 0
        periods     = 1
      }
      msk-no-active-controller = {
        description = "MSK has no active controller"
        namespace   = "AWS/Kafka"
        metric      = "ActiveControllerCount"
        dimensions  = { "Cluster Name" = var.msk_cluster_name }
        statistic   = "Sum"
        comparison  = "LessThanThreshold"
        threshold   = 1
        periods     = 3
      }
      iot-rule-kafka-failures = {
        description = "The IoT Core rule fails to deliver meter messages to MSK"
        namespace   = "AWS/IoT"
        metric      = "Failure"
        dimensions  = { RuleName = var.iot_rule_name, ActionType = "Kafka" }
        statistic   = "Sum"
        comparison  = "GreaterThanThreshold"
        threshold   = 0
        periods     = 5
      }
    },
    { for b in local.broker_ids : "msk-under-replicated-broker-${b}" => {
      description = "MSK broker ${b} has under-replicated partitions (min ISR 2 at risk)"
      namespace   = "AWS/Kafka"
      metric      = "UnderReplicatedPartitions"
      dimensions  = { "Cluster Name" = var.msk_cluster_name, "Broker ID" = b }
      statistic   = "Maximum"
      comparison  = "GreaterThanThreshold"
      threshold   = 0
      periods     = 5
    } },
    { for b in local.broker_ids : "msk-disk-broker-${b}" => {
      description = "MSK broker ${b} data disk above 80 %"
      namespace   = "AWS/Kafka"
      metric      = "KafkaDataLogsDiskUsed"
      dimensions  = { "Cluster Name" = var.msk_cluster_name, "Broker ID" = b }
      statistic   = "Maximum"
      comparison  = "GreaterThanThreshold"
      threshold   = 80
      periods     = 3
    } },
    { for id in local.rds_instances : "rds-cpu-${id}" => {
      description = "RDS ${id} CPU above 80 % for 15 minutes"
      namespace   = "AWS/RDS"
      metric      = "CPUUtilization"
      dimensions  = { DBInstanceIdentifier = id }
      statistic   = "Average"
      comparison  = "GreaterThanThreshold"
      threshold   = 80
      periods     = 3
    } },
    { for id in local.rds_instances : "rds-free-storage-${id}" => {
      description = "RDS ${id} free storage below 10 GiB"
      namespace   = "AWS/RDS"
      metric      = "FreeStorageSpace"
      dimensions  = { DBInstanceIdentifier = id }
      statistic   = "Minimum"
      comparison  = "LessThanThreshold"
      threshold   = 10737418240
      periods     = 1
    } },
    { for id in var.rds_replica_identifiers : "rds-replica-lag-${id}" => {
      description = "RDS read replica ${id} lags more than 60 s: dashboards read stale data"
      namespace   = "AWS/RDS"
      metric      = "ReplicaLag"
      dimensions  = { DBInstanceIdentifier = id }
      statistic   = "Maximum"
      comparison  = "GreaterThanThreshold"
      threshold   = 60
      periods     = 3
    } },
    { for n in local.redis_nodes : "redis-engine-cpu-${n}" => {
      description = "Redis node ${n} engine CPU above 80 %"
      namespace   = "AWS/ElastiCache"
      metric      = "EngineCPUUtilization"
      dimensions  = { CacheClusterId = n }
      statistic   = "Average"
      comparison  = "GreaterThanThreshold"
      threshold   = 80
      periods     = 3
    } },
    { for n in local.redis_nodes : "redis-memory-${n}" => {
      description = "Redis node ${n} memory above 90 %"
      namespace   = "AWS/ElastiCache"
      metric      = "DatabaseMemoryUsagePercentage"
      dimensions  = { CacheClusterId = n }
      statistic   = "Maximum"
      comparison  = "GreaterThanThreshold"
      threshold   = 90
      periods     = 3
    } },
  )
}

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each            = local.alarms
  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = "${each.value.description}. Runbook: ${var.runbook_base_url}/aws-managed-services.md"
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = each.value.dimensions
  statistic           = each.value.statistic
  comparison_operator = each.value.comparison
  threshold           = each.value.threshold
  period              = 300
  evaluation_periods  = each.value.periods
  datapoints_to_alarm = each.value.periods
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = var.tags
}
