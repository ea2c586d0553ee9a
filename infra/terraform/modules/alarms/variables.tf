variable "name" {
  description = "Name prefix, e.g. energy-production"
  type        = string
}

variable "msk_cluster_name" {
  description = "MSK cluster name"
  type        = string
}

variable "msk_broker_count" {
  description = "MSK brokers (ids 1..n)"
  type        = number
}

variable "rds_primary_identifier" {
  description = "RDS primary identifier"
  type        = string
}

variable "rds_replica_identifiers" {
  description = "RDS read replica identifiers"
  type        = list(string)
}

variable "redis_replication_group_id" {
  description = "ElastiCache replication group id"
  type        = string
}

variable "redis_node_count" {
  description = "Nodes of the replication group (ids <group>-001..)"
  type        = number
}

variable "iot_rule_name" {
  description = "IoT topic rule forwarding meters to MSK"
  type        = string
}

variable "runbook_base_url" {
  description = "Where docs/runbooks is published"
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key encrypting the SNS topic"
  type        = string
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
