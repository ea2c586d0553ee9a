variable "name" {
  description = "Name prefix, e.g. energy-production"
  type        = string
}

variable "generated_secrets" {
  description = "Secrets generated at creation, by name, with their description"
  type        = map(string)
  default = {
    "api/token-secret"       = "Signs API session tokens (ENERGY_API__TOKEN_SECRET)"
    "utility/bearer-token"   = "Bearer token utilities present on the DR webhook (ENERGY_SEED__UTILITY_BEARER_TOKEN)"
    "utility/hmac-secret"    = "HMAC secret of utility webhook signatures (ENERGY_SEED__UTILITY_HMAC_SECRET)"
    "dr/ven-credentials-key" = "Encrypts utilities' VEN credentials at rest (ENERGY_DR__CREDENTIALS_KEY)"
    "grafana/admin-password" = "Grafana administrator"
  }
}

variable "kms_key_arn" {
  description = "KMS key encrypting the secrets"
  type        = string
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
