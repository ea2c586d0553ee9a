output "kafka_bootstrap_servers" {
  description = "ENERGY_KAFKA__BOOTSTRAP_SERVERS"
  value       = module.platform.kafka_bootstrap_servers
}

output "postgres_host" {
  description = "ENERGY_POSTGRES__HOST"
  value       = module.platform.postgres_host
}

output "influx_url" {
  description = "ENERGY_INFLUX__URL"
  value       = module.platform.influx_url
}

output "redis_host" {
  description = "ENERGY_REDIS__HOST"
  value       = module.platform.redis_host
}

output "eks_cluster_name" {
  description = "EKS cluster"
  value       = module.platform.eks_cluster_name
}

output "bucket_names" {
  description = "S3 buckets by purpose"
  value       = module.platform.bucket_names
}

output "alarm_topic_arn" {
  description = "SNS topic of the CloudWatch alarms"
  value       = module.platform.alarm_topic_arn
}

output "reliability" {
  description = "Resolved reliability settings of every store (asserted by terraform test)"
  value       = module.platform.reliability
}
