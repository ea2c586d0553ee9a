# Application credentials in Secrets Manager, encrypted with the environment's key. Values are
# generated here and never appear in the repository; the Kubernetes pods read them through
# the External Secrets operator (deploy/base/external-secrets.yaml) as ENERGY_* variables.
data "aws_secretsmanager_random_password" "this" {
  for_each            = var.generated_secrets
  password_length     = 48
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "generated" {
  for_each    = var.generated_secrets
  name        = "${var.name}/${each.key}"
  description = each.value
  kms_key_id  = var.kms_key_arn
  tags        = var.tags
}

resource "aws_secretsmanager_secret_version" "generated" {
  for_each      = var.generated_secrets
  secret_id     = aws_secretsmanager_secret.generated[each.key].id
  secret_string = data.aws_secretsmanager_random_password.this[each.key].random_password
  lifecycle {
    ignore_changes = [secret_string]
  }
}

# MSK SCRAM users must live in secrets named AmazonMSK_* encrypted with a customer key.
resource "aws_secretsmanager_secret" "msk_scram" {
  name        = "AmazonMSK_${var.name}_iot_rule"
  description = "SCRAM user of the IoT Core topic rule that writes meter messages to MSK"
  kms_key_id  = var.kms_key_arn
  tags        = var.tags
}

data "aws_secretsmanager_random_password" "msk_scram" {
  password_length     = 48
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret_version" "msk_scram" {
  secret_id = aws_secretsmanager_secret.msk_scram.id
  secret_string = jsonencode({
    username = "iot-meters"
    password = data.aws_secretsmanager_random_password.msk_scram.random_password
  })
  lifecycle {
    ignore_changes = [secret_string]
  }
}

# SCRAM user of the platform's services (ENERGY_KAFKA__SASL_USERNAME / _PASSWORD, decision 0008).
resource "aws_secretsmanager_secret" "msk_scram_services" {
  name        = "AmazonMSK_${var.name}_services"
  description = "SCRAM user of the platform services (ingestion, aggregation, forecast, DR, API) on MSK"
  kms_key_id  = var.kms_key_arn
  tags        = var.tags
}

data "aws_secretsmanager_random_password" "msk_scram_services" {
  password_length     = 48
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret_version" "msk_scram_services" {
  secret_id = aws_secretsmanager_secret.msk_scram_services.id
  secret_string = jsonencode({
    username = "energy-services"
    password = data.aws_secretsmanager_random_password.msk_scram_services.random_password
  })
  lifecycle {
    ignore_changes = [secret_string]
  }
}
