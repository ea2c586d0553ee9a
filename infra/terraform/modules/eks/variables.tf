variable "name" {
  description = "Cluster name, e.g. energy-production"
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes minor version"
  type        = string
  default     = "1.33"
}

variable "vpc_id" {
  description = "VPC of the cluster"
  type        = string
}

variable "vpc_cidr_block" {
  description = "CIDR allowed to reach the private API endpoint"
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets in 3 AZs for the control plane ENIs and nodes"
  type        = list(string)
}

variable "node_groups" {
  description = "Managed node groups by name"
  type = map(object({
    instance_types = list(string)
    capacity_type  = string
    min_size       = number
    desired_size   = number
    max_size       = number
    disk_gb        = number
  }))
}

variable "kms_key_arn" {
  description = "KMS key for Kubernetes secrets, node volumes and logs"
  type        = string
}

variable "log_retention_days" {
  description = "Retention of control-plane logs"
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
