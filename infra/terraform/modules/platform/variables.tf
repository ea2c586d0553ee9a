variable "environment" {
  description = "staging or production (ENERGY_ENVIRONMENT)"
  type        = string
  validation {
    condition     = contains(["staging", "production"], var.environment)
    error_message = "environment is staging or production."
  }
}

variable "vpc_cidr_block" {
  description = "CIDR of the environment's VPC"
  type        = string
}

variable "single_nat_gateway" {
  description = "One NAT gateway instead of one per AZ"
  type        = bool
  default     = false
}

variable "msk_broker_instance_type" {
  description = "MSK broker instance type"
  type        = string
}

variable "msk_broker_volume_gb" {
  description = "EBS volume per broker"
  type        = number
}

variable "rds_instance_class" {
  description = "RDS instance class of the primary and the replica"
  type        = string
}

variable "rds_backup_retention_days" {
  description = "Automated backup retention"
  type        = number
  default     = 14
}

variable "influxdb_instance_type" {
  description = "Timestream for InfluxDB instance type"
  type        = string
}

variable "redis_node_type" {
  description = "ElastiCache node type"
  type        = string
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version"
  type        = string
  default     = "1.33"
}

variable "eks_node_groups" {
  description = "Managed node groups"
  type = map(object({
    instance_types = list(string)
    capacity_type  = string
    min_size       = number
    desired_size   = number
    max_size       = number
    disk_gb        = number
  }))
}

variable "runbook_base_url" {
  description = "Where docs/runbooks is published"
  type        = string
}

variable "tags" {
  description = "Extra tags"
  type        = map(string)
  default     = {}
}
