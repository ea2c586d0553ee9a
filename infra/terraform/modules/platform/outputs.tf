output "kafka_bootstrap_servers" {
  description = "ENERGY_KAFKA__BOOTSTRAP_SERVERS (IAM auth)"
  value       = module.msk.bootstrap_brokers_sasl_iam
}

output "kafka_topics" {
  description = "Topics to create with partitions and retention"
  value       = module.msk.topics
}

output "postgres_host" {
  description = "ENERGY_POSTGRES__HOST (writer)"
  value       = module.rds.primary_endpoint
}

output "postgres_replica_hosts" {
  description = "Read replica hosts"
  value       = module.rds.replica_endpoints
}

output "postgres_secret_arn" {
  description = "Master credentials (managed by RDS)"
  value       = module.rds.master_user_secret_arn
}

output "influx_url" {
  description = "ENERGY_INFLUX__URL"
  value       = "https://${module.influxdb.endpoint}:${module.influxdb.port}"
}

output "redis_host" {
  description = "ENERGY_REDIS__HOST"
  value       = module.redis.primary_endpoint
}

output "eks_cluster_name" {
  description = "EKS cluster"
  value       = module.eks.cluster_name
}

output "bucket_names" {
  description = "S3 buckets by purpose"
  value       = module.s3.bucket_names
}

output "secret_arns" {
  description = "Application secrets by name"
  value       = module.secrets.secret_arns
}

output "alarm_topic_arn" {
  description = "SNS topic of the CloudWatch alarms"
  value       = module.alarms.sns_topic_arn
}

output "reliability" {
  description = "Resolved reliability settings of every store (asserted by terraform test)"
  value = {
    vpc      = module.vpc.reliability
    msk      = module.msk.reliability
    rds      = module.rds.reliability
    influxdb = module.influxdb.reliability
    redis    = module.redis.reliability
    eks      = module.eks.reliability
    topics   = module.msk.topics
  }
}
