output "secret_arns" {
  description = "Generated secrets by name"
  value       = { for k, s in aws_secretsmanager_secret.generated : k => s.arn }
}

output "msk_scram_secret_arn" {
  description = "ARN of the MSK SCRAM secret of the IoT rule"
  value       = aws_secretsmanager_secret.msk_scram.arn
}

output "msk_scram_secret_name" {
  description = "Name of the MSK SCRAM secret of the IoT rule"
  value       = aws_secretsmanager_secret.msk_scram.name
}

output "msk_scram_services_secret_arn" {
  description = "ARN of the MSK SCRAM secret of the platform services"
  value       = aws_secretsmanager_secret.msk_scram_services.arn
}
