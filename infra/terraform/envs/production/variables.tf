variable "region" {
  description = "AWS region"
  type        = string
  default     = "eu-west-1"
}

variable "runbook_base_url" {
  description = "Where docs/runbooks is published"
  type        = string
  default     = "https://git.example.internal/energy-platform/blob/main/docs/runbooks"
}
