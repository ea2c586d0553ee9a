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

output "reliability" {
  description = "Resolved high-availability and durability settings (asserted by terraform test)"
  value = {
    multi_az              = aws_db_instance.primary.multi_az
    storage_encrypted     = aws_db_instance.primary.storage_encrypted
    deletion_protection   = aws_db_instance.primary.deletion_protection
    backup_retention_days = aws_db_instance.primary.backup_retention_period
    performance_insights  = aws_db_instance.primary.performance_insights_enabled
    replica_count         = length(aws_db_instance.replica)
    replicas_encrypted    = alltrue([for r in aws_db_instance.replica : r.storage_encrypted])
  }
}
