variable "name" {
  description = "Replication group id, e.g. energy-production"
  type        = string
}

variable "engine_version" {
  description = "Redis engine version"
  type        = string
  default     = "7.1"
}

variable "parameter_group_name" {
  description = "Parameter group (cluster mode disabled)"
  type        = string
  default     = "default.redis7"
}

variable "node_type" {
  description = "Cache node type"
  type        = string
  default     = "cache.r7g.large"
}

variable "node_count" {
  description = "Primary plus replicas, spread over the AZs"
  type        = number
  default     = 3
}

variable "snapshot_retention_days" {
  description = "Daily snapshots kept"
  type        = number
  default     = 7
}

variable "azs" {
  description = "Availability zones for the nodes"
  type        = list(string)
}

variable "vpc_id" {
  description = "VPC of the cache"
  type        = string
}

variable "subnet_ids" {
  description = "Isolated data subnets in 3 AZs"
  type        = list(string)
}

variable "allowed_cidr_blocks" {
  description = "Application subnets allowed to connect"
  type        = list(string)
}

variable "kms_key_arn" {
  description = "KMS key for data at rest, the AUTH secret and logs"
  type        = string
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
