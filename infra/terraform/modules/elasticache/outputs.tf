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
  value       = aws_elasticache_replication_group.this.replication_group_id
}

output "reliability" {
  description = "Resolved high-availability and durability settings (asserted by terraform test)"
  value = {
    automatic_failover = aws_elasticache_replication_group.this.automatic_failover_enabled
    multi_az           = aws_elasticache_replication_group.this.multi_az_enabled
    nodes              = aws_elasticache_replication_group.this.num_cache_clusters
    at_rest_encryption = aws_elasticache_replication_group.this.at_rest_encryption_enabled
    transit_encryption = aws_elasticache_replication_group.this.transit_encryption_enabled
    node_azs           = length(distinct(aws_elasticache_replication_group.this.preferred_cache_cluster_azs))
  }
}
