variable "name" {
  description = "Cluster name, e.g. energy-production"
  type        = string
}

variable "kafka_version" {
  description = "Apache Kafka version of the brokers"
  type        = string
  default     = "3.6.0"
}

variable "broker_count" {
  description = "Brokers, one per AZ at least; replication factor 3 needs 3"
  type        = number
  default     = 3
  validation {
    condition     = var.broker_count >= 3
    error_message = "Replication factor 3 with min ISR 2 needs at least 3 brokers."
  }
}

variable "broker_instance_type" {
  description = "Broker instance type"
  type        = string
  default     = "kafka.m7g.large"
}

variable "broker_volume_gb" {
  description = "EBS volume per broker"
  type        = number
  default     = 500
}

variable "default_retention_hours" {
  description = "Broker default retention (meter-readings keeps 7 days; the Parquet archive keeps the rest)"
  type        = number
  default     = 168
}

variable "topics" {
  description = "Topics of the platform (schemas/topics.py): partitions and retention; created explicitly"
  type = map(object({
    partitions   = number
    retention_ms = number
  }))
}

variable "vpc_id" {
  description = "VPC of the brokers"
  type        = string
}

variable "vpc_cidr_block" {
  description = "Clients inside this CIDR may connect"
  type        = string
}

variable "subnet_ids" {
  description = "One private subnet per AZ"
  type        = list(string)
}

variable "kms_key_arn" {
  description = "KMS key for data at rest and broker logs"
  type        = string
}

variable "scram_secret_arns" {
  description = "Secrets Manager secrets (name prefix AmazonMSK_) holding SCRAM users"
  type        = list(string)
  default     = []
}

variable "log_retention_days" {
  description = "Retention of broker logs"
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
