variable "name" {
  description = "Name prefix, e.g. energy-production"
  type        = string
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
