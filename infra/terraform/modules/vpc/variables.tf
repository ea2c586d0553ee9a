variable "name" {
  description = "Name prefix, e.g. energy-production"
  type        = string
}

variable "cidr_block" {
  description = "CIDR of the VPC (a /16 is split into /20 subnets)"
  type        = string
  default     = "10.40.0.0/16"
}

variable "az_count" {
  description = "Availability zones to span; the platform's HA design needs 3"
  type        = number
  default     = 3
  validation {
    condition     = var.az_count >= 3
    error_message = "The platform spans at least 3 availability zones (MSK brokers, Multi-AZ stores)."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway instead of one per AZ (cheaper, loses egress when that AZ fails)"
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "KMS key for the flow-log group"
  type        = string
}

variable "log_retention_days" {
  description = "Retention of VPC flow logs"
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
