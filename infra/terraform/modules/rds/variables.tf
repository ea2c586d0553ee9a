variable "name" {
  description = "Identifier prefix, e.g. energy-production"
  type        = string
}

variable "engine_version" {
  description = "PostgreSQL major.minor version"
  type        = string
  default     = "15.7"
}

variable "instance_class" {
  description = "Primary instance class"
  type        = string
  default     = "db.r6g.large"
}

variable "replica_instance_class" {
  description = "Read replica instance class"
  type        = string
  default     = "db.r6g.large"
}

variable "read_replica_count" {
  description = "Asynchronous read replicas (dashboards, CSV exports)"
  type        = number
  default     = 1
  validation {
    condition     = var.read_replica_count >= 1
    error_message = "The platform design keeps at least one read replica."
  }
}

variable "database" {
  description = "Database name (ENERGY_POSTGRES__DATABASE)"
  type        = string
  default     = "energy"
}

variable "master_username" {
  description = "Master user (ENERGY_POSTGRES__USER for migrations)"
  type        = string
  default     = "energy"
}

variable "allocated_storage_gb" {
  description = "Initial storage"
  type        = number
  default     = 100
}

variable "max_allocated_storage_gb" {
  description = "Storage autoscaling ceiling"
  type        = number
  default     = 1000
}

variable "backup_retention_days" {
  description = "Automated backup retention (point-in-time recovery window)"
  type        = number
  default     = 14
  validation {
    condition     = var.backup_retention_days >= 7
    error_message = "Backups are kept for at least 7 days."
  }
}

variable "vpc_id" {
  description = "VPC of the database"
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
  description = "KMS key for storage, Performance Insights and the master secret"
  type        = string
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
