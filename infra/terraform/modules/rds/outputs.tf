output "primary_endpoint" {
  description = "Writer endpoint host (ENERGY_POSTGRES__HOST)"
  value       = aws_db_instance.primary.address
}

output "replica_endpoints" {
  description = "Read replica hosts"
  value       = aws_db_instance.replica[*].address
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret holding the master credentials (managed and rotated by RDS)"
  value       = aws_db_instance.primary.master_user_secret[0].secret_arn
}

output "identifier" {
  description = "Identifier of the primary instance (CloudWatch dimension)"
  value       = aws_db_instance.primary.identifier
}

output "replica_identifiers" {
  description = "Identifiers of the read replicas (CloudWatch dimension)"
  value       = aws_db_instance.replica[*].identifier
}
