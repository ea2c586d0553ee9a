variable "name" {
  description = "Name prefix, e.g. energy-production"
  type        = string
}

variable "buckets" {
  description = "Buckets by purpose with lifecycle rules (0 disables a transition or expiry)"
  type = map(object({
    infrequent_access_after_days = number
    glacier_after_days           = number
    expire_after_days            = number
    noncurrent_expire_days       = number
  }))
  default = {
    raw-archive = {
      infrequent_access_after_days = 30
      glacier_after_days           = 180
      expire_after_days            = 2555
      noncurrent_expire_days       = 30
    }
    model-artifacts = {
      infrequent_access_after_days = 90
      glacier_after_days           = 0
      expire_after_days            = 0
      noncurrent_expire_days       = 180
    }
  }
}

variable "kms_key_arn" {
  description = "KMS key for server-side encryption"
  type        = string
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
