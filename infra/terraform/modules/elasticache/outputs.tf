output "primary_endpoint" {
  description = "Primary endpoint host (ENERGY_REDIS__HOST)"
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "reader_endpoint" {
  description = "Reader endpoint host"
  value       = aws_elasticache_replication_group.this.reader_endpoint_address
}

output "auth_secret_arn" {
  description = "Secret with the AUTH token"
  value       = aws_secretsmanager_secret.auth.arn
}

output "replication_group_id" {
  description = "Replication group id (CloudWatch dimension)"
  value       = aws_elasticache_replication_group.this.id
}
