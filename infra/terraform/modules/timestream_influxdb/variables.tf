variable "name" {
  description = "Instance name, e.g. energy-production"
  type        = string
}

variable "instance_type" {
  description = "Timestream for InfluxDB instance type"
  type        = string
  default     = "db.influx.large"
}

variable "storage_type" {
  description = "InfluxIOIncludedT1 | InfluxIOIncludedT2 | InfluxIOIncludedT3"
  type        = string
  default     = "InfluxIOIncludedT2"
}

variable "allocated_storage_gb" {
  description = "Storage in GiB"
  type        = number
  default     = 400
}

variable "port" {
  description = "HTTP API port"
  type        = number
  default     = 8086
}

variable "admin_username" {
  description = "Administrator user name"
  type        = string
  default     = "energy-admin"
}

variable "organization" {
  description = "InfluxDB organisation"
  type        = string
  default     = "energy"
}

variable "bucket" {
  description = "Initial bucket, mapped to database energy / retention policy raw_90d for the v1 API"
  type        = string
  default     = "energy-raw_90d"
}

variable "vpc_id" {
  description = "VPC of the instance"
  type        = string
}

variable "subnet_ids" {
  description = "Isolated data subnets (two AZs are used by the Multi-AZ standby)"
  type        = list(string)
}

variable "allowed_cidr_blocks" {
  description = "Application subnets allowed to connect"
  type        = list(string)
}

variable "kms_key_arn" {
  description = "KMS key for the admin secret and the engine-log bucket"
  type        = string
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
